package chroot_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/chroot"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// needRoot returns the trixie root scripts/install-deps.sh makes, or skips
// (fails under CI) without it.
func needRoot(t *testing.T) string {
	t.Helper()
	root := testenv.TrixieRoot()
	if err := chroot.Check(root, "sh"); err != nil {
		testenv.Unavailable(t, err.Error())
	}
	return root
}

// mountsUnder returns the host's mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// TestCommand: the program runs inside the root, sees a bound host
// directory at the same path, and has /proc and /dev.
func TestCommand(t *testing.T) {
	root := needRoot(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "from-host"), []byte("hello from the host\n"), 0o644)
	cmd := chroot.Command(root, chroot.Binds(dir), "sh", "-c",
		`cat /etc/debian_version; cat "$1/from-host"; test -r /proc/self/status; test -c /dev/null; echo ok`, "sh", dir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	host, _ := os.ReadFile("/etc/debian_version")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || lines[1] != "hello from the host" || lines[2] != "ok" {
		t.Fatalf("output %q", out.String())
	}
	inside, _ := os.ReadFile(filepath.Join(root, "etc/debian_version"))
	if lines[0] != strings.TrimSpace(string(inside)) {
		t.Errorf("debian_version inside = %q, the root's is %q (the host's %q)", lines[0], inside, host)
	}
}

// TestNoMountOutlivesCommand: while a command runs its mounts are invisible
// on the host, and once it is killed (SIGKILL, no cleanup of its own) none
// is left, so a crashed test leaves the machine as it found it.
func TestNoMountOutlivesCommand(t *testing.T) {
	root := needRoot(t)
	if m := mountsUnder(t, root); len(m) != 0 {
		t.Fatalf("mounts under %s before the test: %v", root, m)
	}
	cmd := chroot.Command(root, chroot.Binds(t.TempDir()), "sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pid := cmd.Process.Pid
	testenv.Eventually(t, 30*time.Second, "the command inside the root", func() bool {
		r, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "root"))
		return r == root
	})
	ns, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "mountinfo"))
	if !strings.Contains(string(ns), " "+root+"/proc ") && !strings.Contains(string(ns), " /proc ") {
		t.Errorf("no /proc mount in the command's namespace:\n%s", ns)
	}
	if m := mountsUnder(t, root); len(m) != 0 {
		t.Errorf("the command's mounts show on the host: %v", m)
	}
	cmd.Process.Kill()
	<-done
	if m := mountsUnder(t, root); len(m) != 0 {
		t.Errorf("mounts left under %s after SIGKILL: %v", root, m)
	}
}

func TestBinds(t *testing.T) {
	got := chroot.Binds("/tmp/a/b", "/tmp", "", "/srv/x", "/tmp/", "/srv/x")
	want := []string{"/tmp", "/srv/x"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Binds = %v, want %v", got, want)
	}
}
