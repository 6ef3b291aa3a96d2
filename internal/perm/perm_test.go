package perm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestHintNamesUIDAndOwner: a permission error says which uid was refused
// and whose the file is (a test running as root is never refused, so the
// error is made here), and other errors pass unchanged.
func TestHintNamesUIDAndOwner(t *testing.T) {
	f := filepath.Join(t.TempDir(), "signing-key")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	denied := &fs.PathError{Op: "open", Path: f, Err: syscall.EACCES}
	err := Hint(f, "read", denied)
	want := fmt.Sprintf("uid %d may not read %s, which is uid %d's, mode 0600: chown it to uid %d", os.Geteuid(), f, os.Getuid(), os.Geteuid())
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), want) {
		t.Errorf("Hint = %v, want it to wrap the error and say %q", err, want)
	}
	other := &fs.PathError{Op: "open", Path: f, Err: syscall.ENOENT}
	if got := Hint(f, "read", other); got != error(other) {
		t.Errorf("Hint changed a non-permission error: %v", got)
	}
}
