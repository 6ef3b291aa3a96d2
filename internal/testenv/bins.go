package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// Binaries builds bin/nix-ipfs-hook and bin/nix-ipfs (static: CGO_ENABLED=0)
// once per test process, under the host's temp directory,
// so integration tests run the real programs Nix and operators run, and
// returns the directory that holds them.
func Binaries(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		var root []byte
		root, binErr = exec.Command("go", "env", "GOMOD").Output()
		if binErr != nil {
			return
		}
		dir := filepath.Dir(strings.TrimSpace(string(root)))
		binDir, binErr = os.MkdirTemp("", "nix-ipfs-bin-")
		if binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/nix-ipfs-hook", "./cmd/nix-ipfs")
		cmd.Dir = dir
		// Static, as deploy builds them (Dockerfile): they run unchanged
		// inside the Nix 2.26 chroot, whatever its C library.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		var out []byte
		out, binErr = cmd.CombinedOutput()
		if binErr != nil {
			binErr = &buildError{err: binErr, out: string(out)}
		}
	})
	if binErr != nil {
		t.Fatalf("build binaries: %v", binErr)
	}
	return binDir
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
