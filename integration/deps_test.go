package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// stubApt is apt-get as seen by scripts/install-deps.sh: pages of output,
// like the real one on a fresh machine, and "installing" a package makes
// its command exist. FAIL_PACKAGE makes that package's install fail.
const stubApt = `#!/bin/bash
for i in $(seq 1 200); do echo "Get:$i http://deb.debian.org/debian bookworm/main noise-$i"; done
[ "$1" = update ] && exit 0
pkg="${@: -1}"
[ "$pkg" = "$FAIL_PACKAGE" ] && { echo "E: Unable to locate package $pkg"; exit 100; }
case "$pkg" in
nix-bin) printf '#!/bin/bash\necho "nix-build (Nix) 2.8.0"\n' > "$STUBS/nix-build" ;;
*) printf '#!/bin/bash\n' > "$STUBS/$pkg" ;;
esac
chmod +x "$STUBS/$pkg" "$STUBS/nix-build" 2>/dev/null
for c in pkill dockerd docker-compose busybox gosu tini-static; do printf '#!/bin/bash\n' > "$STUBS/$c"; chmod +x "$STUBS/$c"; done
exit 0
`

// TestInstallDepsOneLinePerStep runs scripts/install-deps.sh as on a fresh
// machine (no Nix, an apt-get as loud as the real one; the cached tools of
// this machine stand in for downloads) and checks what a person sees: one
// line per step, with apt's output in the log file; and when a step fails,
// the end of that log.
func TestInstallDepsOneLinePerStep(t *testing.T) {
	real := os.Getenv("NIX_IPFS_TOOLS")
	if real == "" {
		home, _ := os.UserHomeDir()
		real = filepath.Join(home, ".cache", "nix-ipfs", "bin")
	}
	cached, _ := os.ReadDir(real)
	if len(cached) == 0 {
		testenv.Unavailable(t, "no cached tools in "+real+" (scripts/install-deps.sh caches them; make test runs it first)")
	}
	run := func(t *testing.T, failPackage string, args ...string) (string, string, error) {
		dir := t.TempDir()
		stubs, tools := filepath.Join(dir, "stubs"), filepath.Join(dir, "cache", "bin")
		must(t, os.MkdirAll(stubs, 0o755))
		must(t, os.MkdirAll(tools, 0o755))
		for _, e := range cached { // what an earlier run built and downloaded
			if e.Name() != "ipfs" {
				must(t, os.Symlink(filepath.Join(real, e.Name()), filepath.Join(tools, e.Name())))
			}
		}
		must(t, os.WriteFile(filepath.Join(stubs, "apt-get"), []byte(stubApt), 0o755))
		// Only what the script needs besides apt-get: no nix-build.
		for _, c := range []string{"bash", "mkdir", "dirname", "sed", "tail", "ln", "date", "seq", "chmod", "mktemp", "cp", "rm", "mv", "cat", "go", "id", "sh", "grep", "tr", "unshare", "mount", "chroot"} {
			p, err := exec.LookPath(c)
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			must(t, os.Symlink(p, filepath.Join(stubs, c)))
		}
		log := filepath.Join(dir, "install-deps.log")
		cmd := exec.Command(filepath.Join(stubs, "bash"), append([]string{repoFile(t, "scripts/install-deps.sh")}, args...)...)
		cmd.Env = []string{"PATH=" + stubs, "HOME=" + dir, "NIX_IPFS_TOOLS=" + tools, "NIX_IPFS_DEPS_LOG=" + log,
			"STUBS=" + stubs, "NIX_IPFS_TRIXIE_ROOT=" + filepath.Join(filepath.Dir(real), "nix-trixie"), "FAIL_PACKAGE=" + failPackage, "GOPATH=" + os.Getenv("GOPATH"), "GOMODCACHE=" + goEnv(t, "GOMODCACHE"), "GOCACHE=" + goEnv(t, "GOCACHE")}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		b, _ := os.ReadFile(log)
		return string(out) + "\n" + stderr.String(), string(b), err
	}

	t.Run("Fresh", func(t *testing.T) {
		out, log, err := run(t, "")
		if err != nil {
			t.Fatalf("install-deps: %v\n%s", err, out)
		}
		if !strings.Contains(out, "installing Debian's nix-bin (apt-get) ... done") {
			t.Errorf("no line for the nix-bin step:\n%s", out)
		}
		if strings.Contains(out, "noise-") {
			t.Errorf("apt-get's output reached the terminal:\n%s", out)
		}
		for _, want := range []string{"chromium not found: for the status page's browser test, installing Debian's chromium ... done",
			"prometheus not found: for the metrics and alert tests (with promtool), installing Debian's prometheus ... done"} {
			if !strings.Contains(out, want) {
				t.Errorf("no line %q:\n%s", want, out)
			}
		}
		t.Logf("what a person sees:\n%s", out)
		if lines := strings.Count(out, "\n"); lines > 15 {
			t.Errorf("%d lines of output; want one per step:\n%s", lines, out)
		}
		if !strings.Contains(log, "noise-200") {
			t.Errorf("apt-get's output is not in the log:\n%s", log)
		}
	})
	// make demo installs what the demo runs, and nothing for the tests.
	t.Run("Demo", func(t *testing.T) {
		out, _, err := run(t, "", "--demo")
		if err != nil {
			t.Fatalf("install-deps --demo: %v\n%s", err, out)
		}
		if !strings.Contains(out, "for the builds of the demo and the tests, installing Debian's nix-bin (apt-get) ... done") {
			t.Errorf("no line for the nix-bin step:\n%s", out)
		}
		for _, not := range []string{"docker", "chromium", "prometheus", "nats-server", "gosu", "busybox"} {
			if strings.Contains(out, not) {
				t.Errorf("install-deps --demo mentions %s:\n%s", not, out)
			}
		}
		t.Logf("what a person sees:\n%s", out)
	})
	t.Run("StepFails", func(t *testing.T) {
		out, _, err := run(t, "nix-bin")
		if err == nil {
			t.Fatalf("install-deps succeeded with apt-get failing:\n%s", out)
		}
		if !strings.Contains(out, "failed (exit 100)") || !strings.Contains(out, "E: Unable to locate package nix-bin") {
			t.Errorf("the failure and the end of the log are not shown:\n%s", out)
		}
	})
}

func goEnv(t *testing.T, name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
