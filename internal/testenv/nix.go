package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/chroot"
)

// Nix runs one real Nix (Debian's nix-bin: single-user, as root) configured
// for tests: no substituters (cache.nixos.org is unreachable and would cost
// seconds per build), a post-build-hook if set, and a throwaway signing key.
//
// Two Nix versions are covered (see NixVersions): the host's, Debian 12's
// Nix 2.8.0, and Debian 13 (trixie)'s Nix 2.26 in a chroot that
// scripts/install-deps.sh makes. A chroot Nix has its own store and
// database under its root; every command runs inside the chroot (package
// internal/chroot) with the host's temp directory mounted at the same path,
// so that t.TempDir() paths, the test binaries (Binaries) and the files
// Nix writes there are the same paths on both sides. A program that reads
// this Nix's store (the publisher, `nix-ipfs up`) must run beside it: Exec
// and StartProc do that.
type Nix struct {
	// Version is what `nix-build --version` says, "2.8.0" or "2.26.3".
	Version string
	// Root is the chroot's root directory, or "" for the host's Nix.
	Root string

	Dir       string // scratch dir for expressions and out-links
	SecretKey string // path of a throwaway binary cache secret key
	PublicKey string // its public key, "name:base64"
	KeyName   string
	// Hook, if set, is passed as post-build-hook.
	Hook string
	// Env is added to every Nix command's environment (the hook inherits it).
	Env []string
}

// NewNix checks that the host's Nix is installed and makes a signing key.
func NewNix(t testing.TB) *Nix {
	t.Helper()
	NeedProgram(t, "nix-build")
	NeedProgram(t, "nix-store")
	n := &Nix{Dir: t.TempDir(), KeyName: "nix-ipfs-test-1"}
	n.setup(t)
	return n
}

func (n *Nix) setup(t testing.TB) {
	t.Helper()
	if n.Version == "" {
		v, err := nixVersion(n.Root)
		if err != nil {
			t.Fatal(err)
		}
		n.Version = v
	}
	n.SecretKey = filepath.Join(n.Dir, "secret.key")
	pub := filepath.Join(n.Dir, "public.key")
	n.Run(t, "nix-store", "--generate-binary-cache-key", n.KeyName, n.SecretKey, pub)
	if err := os.Chmod(n.SecretKey, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	n.PublicKey = strings.TrimSpace(string(b))
}

// Options are the --option flags every Nix command gets.
func (n *Nix) Options() []string {
	opts := []string{
		"--option", "substituters", "",
		"--option", "experimental-features", "nix-command",
	}
	if n.Hook != "" {
		opts = append(opts, "--option", "post-build-hook", n.Hook)
	}
	return opts
}

// Command returns a Nix command with the test options and environment.
func (n *Nix) Command(name string, args ...string) *exec.Cmd {
	var full []string
	switch name {
	case "nix-build", "nix-store", "nix":
		if name == "nix" && len(args) > 0 {
			// nix <subcommand> takes options after the subcommand.
			full = append([]string{args[0]}, append(n.Options(), args[1:]...)...)
		} else if name == "nix-store" && len(args) > 0 && args[0] == "--generate-binary-cache-key" {
			full = args
		} else {
			full = append(n.Options(), args...)
		}
	default:
		full = args
	}
	cmd := n.Exec(name, full...)
	cmd.Env = append(os.Environ(), n.Env...)
	return cmd
}

// Exec returns a command that runs name beside this Nix: directly for the
// host's, inside the chroot for another (name is then looked up on the
// chroot's PATH unless absolute; a project binary must be static, as
// Binaries builds them, and under the host's temp directory). Its
// environment is the caller's to set.
func (n *Nix) Exec(name string, args ...string) *exec.Cmd {
	if n.Root == "" {
		return exec.Command(name, args...)
	}
	return chroot.Command(n.Root, chroot.Binds(os.TempDir()), name, args...)
}

// StartProc is the package's StartProc for a program that runs beside this
// Nix (see Exec): the publisher, which reads this Nix's database and store.
func (n *Nix) StartProc(t testing.TB, bin string, args []string, env ...string) *Proc {
	t.Helper()
	c := n.Exec(bin, args...)
	return startProc(t, nil, filepath.Base(bin), c.Path, c.Args[1:], env)
}

// Dump returns the NAR serialisation of p as this Nix's nix-store --dump
// writes it (p may also be a path inside a chroot store directory).
func (n *Nix) Dump(t testing.TB, p string) []byte {
	t.Helper()
	cmd := n.Command("nix-store", "--dump", p)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix-store --dump %s (Nix %s): %v\n%s", p, n.Version, err, stderr.String())
	}
	return stdout.Bytes()
}

// Run runs a Nix command and returns its stdout; it fails the test on error.
func (n *Nix) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Try(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// Try runs a Nix command and returns stdout, or an error with stderr.
func (n *Nix) Try(name string, args ...string) (string, error) {
	cmd := n.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("Nix %s: %v\n%s", n.Version, err, stderr.String())
	}
	return stdout.String(), nil
}

// Build writes expr to a file and nix-builds it, returning the output paths
// nix-build prints (one per output).
func (n *Nix) Build(t testing.TB, expr string, args ...string) []string {
	t.Helper()
	out, err := n.TryBuild(expr, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryBuild is Build without failing the test.
func (n *Nix) TryBuild(expr string, args ...string) ([]string, error) {
	f, err := os.CreateTemp(n.Dir, "expr-*.nix")
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(expr); err != nil {
		return nil, err
	}
	f.Close()
	out, err := n.Try("nix-build", append([]string{f.Name(), "--no-out-link"}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("nix-build %s: %w", f.Name(), err)
	}
	return strings.Fields(out), nil
}

// Nonce returns a fresh string to put in a derivation, so each test builds
// new paths (a path already in the store is not built, and no hook runs).
func Nonce() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Drv returns a Nix expression for a derivation that needs no nixpkgs:
// builder is /bin/sh with PATH set, script runs with $out (and other
// outputs) set. extra is spliced into the attribute set.
func Drv(name, script, extra string) string {
	return fmt.Sprintf(`derivation {
  name = %q;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" %s ];
  %s
}`, name, nixString(script), extra)
}

// nixString quotes s as a Nix indented string, so shell scripts need no
// escaping beyond ” and ${.
func nixString(s string) string {
	s = strings.ReplaceAll(s, "''", "'''")
	s = strings.ReplaceAll(s, "${", "''${")
	return "''\n" + s + "\n''"
}
