package publisher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
)

func TestLoadSecretKeyRefusesReadableKey(t *testing.T) {
	sk, _, err := signature.GenerateKeypair("test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "key")
	os.WriteFile(f, []byte(sk.String()+"\n"), 0o600)
	if _, err := LoadSecretKey(f); err != nil {
		t.Fatalf("mode 600: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		os.Chmod(f, mode)
		_, err := LoadSecretKey(f)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	os.Chmod(f, 0o600)
	os.WriteFile(f, []byte("test-1:not-base64-secret-material"), 0o600)
	_, err = LoadSecretKey(f)
	if err == nil || strings.Contains(err.Error(), "secret-material") {
		t.Errorf("bad key: %v (must not quote the file)", err)
	}
}

func TestCacheOpen(t *testing.T) {
	dir := t.TempDir()
	c := Cache{Dir: dir, StoreDir: "/nix/store"}
	os.MkdirAll(filepath.Join(dir, "nar"), 0o755)
	stale := filepath.Join(dir, "nar", ".tmp-incoming.nar-123")
	os.WriteFile(stale, []byte("half a NAR"), 0o644)
	old := time.Now().Add(-atomicfile.StaleAfter - time.Minute)
	os.Chtimes(stale, old, old)
	// Another live publisher sharing the cache is writing this one.
	live := filepath.Join(dir, "nar", ".tmp-incoming.nar-456")
	os.WriteFile(live, []byte("a NAR being written"), 0o644)
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "nix-cache-info")); string(b) != "StoreDir: /nix/store\n" {
		t.Errorf("nix-cache-info = %q", b)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("a crashed writer's temp file survived Open")
	}
	if _, err := os.Stat(live); err != nil {
		t.Error("Open removed a temp file a live writer may be writing")
	}
	other := Cache{Dir: dir, StoreDir: "/gnu/store"}
	if err := other.Open(); err == nil {
		t.Error("a cache for another store dir was opened")
	}
}

// TestNotPermittedNamesUIDAndOwner: a permission error says which uid was
// refused and whose the file is (a test running as root is never refused,
// so the error is made here), and other errors pass unchanged.
func TestNotPermittedNamesUIDAndOwner(t *testing.T) {
	f := filepath.Join(t.TempDir(), "signing-key")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	denied := &fs.PathError{Op: "open", Path: f, Err: syscall.EACCES}
	err := notPermitted(f, "read", denied)
	want := fmt.Sprintf("uid %d may not read %s, which is uid %d's, mode 0600: chown it to uid %d", os.Geteuid(), f, os.Getuid(), os.Geteuid())
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), want) {
		t.Errorf("notPermitted = %v, want it to wrap the error and say %q", err, want)
	}
	other := &fs.PathError{Op: "open", Path: f, Err: syscall.ENOENT}
	if got := notPermitted(f, "read", other); got != error(other) {
		t.Errorf("notPermitted changed a non-permission error: %v", got)
	}
}
