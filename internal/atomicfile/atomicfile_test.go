package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestDirSyncerGroupsAndOrders: concurrent grouped commits all land whole,
// with fewer directory fsyncs than commits when they overlap; and a Sync
// that starts while none runs always gets an fsync of its own, so no
// caller returns on an fsync that began before its rename.
func TestDirSyncerGroupsAndOrders(t *testing.T) {
	var calls atomic.Int64
	orig := syncDir
	syncDir = func(dir string) error { calls.Add(1); return orig(dir) }
	defer func() { syncDir = orig }()

	dir := t.TempDir()
	var s DirSyncer
	const n = 64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := WriteFileGrouped(filepath.Join(dir, fmt.Sprint(i)), []byte(fmt.Sprint("content ", i)), 0o644, &s); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := 0; i < n; i++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil || string(b) != fmt.Sprint("content ", i) {
			t.Errorf("file %d: %q, %v", i, b, err)
		}
	}
	got := calls.Load()
	t.Logf("%d grouped commits, %d directory fsyncs", n, got)
	if got < 1 || got > n {
		t.Errorf("%d directory fsyncs for %d commits", got, n)
	}

	calls.Store(0)
	for i := 0; i < 3; i++ {
		if err := s.Sync(dir); err != nil {
			t.Fatal(err)
		}
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("3 Syncs one after another made %d fsyncs, want 3", got)
	}
	if err := s.Sync(filepath.Join(dir, "missing")); err == nil {
		t.Error("Sync of a missing directory succeeded")
	}
}
