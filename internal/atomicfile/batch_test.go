package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestCommitAll: every file lands whole under its name, with one
// directory fsync per directory for all of them; a file already
// committed fails alone.
func TestCommitAll(t *testing.T) {
	var calls atomic.Int64
	orig := syncDir
	syncDir = func(dir string) error { calls.Add(1); return orig(dir) }
	defer func() { syncDir = orig }()

	dirs := []string{t.TempDir(), t.TempDir()}
	var (
		files []*File
		paths []string
	)
	for i := 0; i < 50; i++ {
		p := filepath.Join(dirs[i%2], fmt.Sprint("f", i))
		f, err := Create(p, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(f, "content ", i)
		files, paths = append(files, f), append(paths, p)
	}
	files[3].Abort()
	errs := CommitAll(files, paths)
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if i == 3 {
			if errs[i] == nil || err == nil {
				t.Errorf("aborted file: commit error %v, file read error %v", errs[i], err)
			}
			continue
		}
		if errs[i] != nil || string(b) != fmt.Sprint("content ", i) {
			t.Errorf("file %d: %q, %v, %v", i, b, err, errs[i])
		}
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("%d directory fsyncs for 49 files in 2 directories, want 2", got)
	}
	for _, d := range dirs {
		if n, _ := Clean(d, 0); n != 0 {
			t.Errorf("%d temp files left in %s", n, d)
		}
	}
}
