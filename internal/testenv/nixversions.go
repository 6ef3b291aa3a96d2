package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/chroot"
)

// The Nix versions the tests run against. The host's is Debian 12's nix-bin
// (Nix 2.8.0, 2022, the one that passes an empty OUT_PATHS); the chroot's
// is Debian 13 (trixie)'s nix-bin (Nix 2.26.3, 2025), which
// scripts/install-deps.sh debootstraps into a cached directory.
var nixSources = []struct {
	label string // the subtest name while the version is unknown
	root  func() string
}{
	{"host", func() string { return "" }},
	{"trixie", TrixieRoot},
}

// TrixieRoot is the directory of the trixie chroot holding Nix 2.26:
// $NIX_IPFS_TRIXIE_ROOT, or nix-trixie beside the tools directory
// (~/.cache/nix-ipfs/nix-trixie), as scripts/install-deps.sh makes it.
func TrixieRoot() string {
	if r := os.Getenv("NIX_IPFS_TRIXIE_ROOT"); r != "" {
		return r
	}
	tools := os.Getenv("NIX_IPFS_TOOLS")
	if tools == "" {
		home, _ := os.UserHomeDir()
		tools = filepath.Join(home, ".cache", "nix-ipfs", "bin")
	}
	return filepath.Join(filepath.Dir(tools), "nix-trixie")
}

var (
	versionMu sync.Mutex
	versions  = map[string]versionResult{}
)

type versionResult struct {
	v   string
	err error
}

// nixVersion returns the version of the Nix at root ("" for the host's),
// asked once per test process.
func nixVersion(root string) (string, error) {
	versionMu.Lock()
	defer versionMu.Unlock()
	if r, ok := versions[root]; ok {
		return r.v, r.err
	}
	v, err := askVersion(root)
	versions[root] = versionResult{v, err}
	return v, err
}

func askVersion(root string) (string, error) {
	where := "the host"
	if root != "" {
		where = "the chroot " + root
		if err := chroot.Check(root, "nix-build"); err != nil {
			return "", fmt.Errorf("Nix in %s: %w", where, err)
		}
	}
	n := &Nix{Root: root}
	cmd := n.Exec("nix-build", "--version")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("nix-build --version in %s: %v\n%s", where, err, stderr.String())
	}
	f := strings.Fields(stdout.String())
	if len(f) == 0 {
		return "", fmt.Errorf("nix-build --version in %s printed nothing", where)
	}
	return f[len(f)-1], nil
}

// ForEachNix runs f as one subtest per Nix version, named "nix-<version>"
// ("nix-2.8.0", "nix-2.26.3"), each with a Nix of its own made as NewNix
// makes the host's. A version that is not installed is skipped with the
// reason, or fails under CI, where scripts/install-deps.sh installs both.
func ForEachNix(t *testing.T, f func(t *testing.T, n *Nix)) {
	t.Helper()
	for _, src := range nixSources {
		root := src.root()
		v, err := nixVersion(root)
		name := "nix-" + src.label
		if err == nil {
			name = "nix-" + v
		}
		t.Run(name, func(t *testing.T) {
			if err != nil {
				Unavailable(t, err.Error())
			}
			n := &Nix{Version: v, Root: root, Dir: t.TempDir(), KeyName: "nix-ipfs-test-1"}
			if root == "" {
				NeedProgram(t, "nix-store")
				t.Logf("Nix %s, the host's", v)
			} else {
				t.Logf("Nix %s, in the chroot %s", v, root)
			}
			n.setup(t)
			f(t, n)
		})
	}
}

// OutPathsEmpty reports whether this Nix is known to run the
// post-build-hook with an empty OUT_PATHS (NixOS/nix#6446: 2.8.0, fixed in
// 2.8.1).
func (n *Nix) OutPathsEmpty() bool { return n.Version == "2.8.0" }

// Before reports whether this Nix's version is older than v ("2.19"),
// comparing the dotted numbers one by one (a missing number is 0).
func (n *Nix) Before(v string) bool {
	a, b := strings.Split(n.Version, "."), strings.Split(v, ".")
	for i := 0; i < len(a) || i < len(b); i++ {
		x, y := versionPart(a, i), versionPart(b, i)
		if x != y {
			return x < y
		}
	}
	return false
}

func versionPart(p []string, i int) int {
	if i >= len(p) {
		return 0
	}
	n := 0
	for _, c := range p[i] {
		if c < '0' || c > '9' {
			break // "3pre2024..." counts as 3
		}
		n = n*10 + int(c-'0')
	}
	return n
}
