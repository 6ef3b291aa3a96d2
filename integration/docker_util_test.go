package integration

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// dockerEngine is a dockerd of the test's own in a network namespace of its
// own, so containers with host networking see only that namespace's
// loopback and the compose file's fixed ports clash with nothing on the
// machine. Its data root, exec root, pidfile and socket are the test's own:
// a dockerd someone else runs is left alone.
type dockerEngine struct {
	ns   string // network namespace name (/run/netns/<ns>)
	dir  string
	sock string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startDockerEngine starts dockerd with the vfs storage driver, no bridge and
// no iptables rules, and waits until it answers. Cleanup stops it, removes
// its namespace and its directories.
func startDockerEngine(t *testing.T) *dockerEngine {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "dockerd needs root")
	}
	for _, p := range []string{"dockerd", "docker", "ip", "nsenter"} {
		testenv.NeedProgram(t, p)
	}
	if otherDockerd() {
		t.Log("a dockerd already answers on /var/run/docker.sock: left alone; the test runs its own in a namespace of its own")
	}
	// Short paths: containerd's socket lives under the exec root, and a unix
	// socket's path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "nixipfs-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	e := &dockerEngine{ns: "nixipfs-dk-" + randHex(3), dir: dir,
		sock: filepath.Join(dir, "docker.sock"), log: filepath.Join(dir, "dockerd.log")}
	ipCmd(t, "netns", "add", e.ns)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", e.ns).Run()
		// dockerd leaves its namespace bind-mounted under the exec root.
		unmountUnder(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove dockerd's directories: %v", err)
		}
	})
	ipCmd(t, "-n", e.ns, "link", "set", "lo", "up")

	logf, err := os.Create(e.log)
	if err != nil {
		t.Fatal(err)
	}
	// nsenter, not `ip netns exec`: that one remounts /sys for the
	// namespace, which hides the cgroup mounts dockerd needs.
	e.cmd = exec.Command("nsenter", "--net="+e.nsPath(), "--",
		"dockerd", "--storage-driver=vfs", "--bridge=none", "--iptables=false", "--ip6tables=false",
		"--data-root="+filepath.Join(dir, "root"), "--exec-root="+filepath.Join(dir, "exec"),
		"--pidfile="+filepath.Join(dir, "dockerd.pid"), "--host=unix://"+e.sock)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	// No parent-death signal: it follows the thread that started dockerd,
	// not the test process, and Go ends threads when it likes. Cleanup
	// stops dockerd.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	e.done = make(chan struct{})
	go func() { e.cmd.Wait(); logf.Close(); close(e.done) }()
	t.Cleanup(func() {
		// dockerd stops its containers and its containerd on SIGTERM.
		syscall.Kill(e.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(60 * time.Second):
			syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
			<-e.done
		}
		if t.Failed() {
			t.Logf("dockerd log tail:\n%s", tailFile(e.log, 30))
		}
	})
	testenv.Eventually(t, 90*time.Second, "dockerd to answer", func() bool {
		select {
		case <-e.done:
			t.Fatalf("dockerd exited:\n%s", tailFile(e.log, 30))
		default:
		}
		return e.docker("version").Run() == nil
	})
	return e
}

func (e *dockerEngine) nsPath() string { return "/run/netns/" + e.ns }

// env is the environment of docker and docker-compose commands for this
// engine.
func (e *dockerEngine) env() []string {
	env := cleanEnv()
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DOCKER_") && !strings.HasPrefix(kv, "COMPOSE_") {
			out = append(out, kv)
		}
	}
	// The classic builder: it needs no buildx plugin, and our images have
	// no RUN step for BuildKit to speed up.
	return append(out, "DOCKER_HOST=unix://"+e.sock, "DOCKER_BUILDKIT=0")
}

func (e *dockerEngine) docker(args ...string) *exec.Cmd {
	cmd := exec.Command("docker", args...)
	cmd.Env = e.env()
	return cmd
}

// run runs docker with args and fails the test with its output on error.
func (e *dockerEngine) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.docker(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS returns cmd run in the engine's network namespace, as a process on
// the host otherwise (same mounts, same Nix store).
func (e *dockerEngine) inNS(cmd *exec.Cmd) *exec.Cmd {
	c := exec.Command("nsenter", append([]string{"--net=" + e.nsPath(), "--"}, cmd.Args...)...)
	c.Env, c.Dir = cmd.Env, cmd.Dir
	return c
}

// dial connects to addr in the engine's namespace: the socket is made on a
// thread moved into the namespace, so an http.Client in the test reaches
// the containers' loopback.
func (e *dockerEngine) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Back to the test's namespace before the thread is unlocked, so
		// no thread ends here (a parent-death signal of a process started
		// on it, such as a test's kubo, would fire).
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer own.Close()
		f, err := os.Open(e.nsPath())
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("setns %s: %w", e.nsPath(), err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		unix.Unmount(mounts[i], unix.MNT_DETACH)
	}
}

func otherDockerd() bool {
	c, err := net.DialTimeout("unix", "/var/run/docker.sock", time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func tailFile(name string, n int) string {
	b, _ := os.ReadFile(name)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rootfs is an image's file system, written as one tar layer (ADD of a
// local tar unpacks it with the owners and modes recorded here, which COPY
// cannot give).
type rootfs struct {
	tw  *tar.Writer
	buf *bufio.Writer
	f   *os.File
	err error
}

func newRootfs(t *testing.T, name string) *rootfs {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	buf := bufio.NewWriterSize(f, 1<<20)
	return &rootfs{tw: tar.NewWriter(buf), buf: buf, f: f}
}

func (r *rootfs) dir(name string, mode int64, uid, gid int) {
	if r.err == nil {
		r.err = r.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(name, "/") + "/", Mode: mode, Uid: uid, Gid: gid})
	}
}

func (r *rootfs) symlink(name, target string) {
	if r.err == nil {
		r.err = r.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(name, "/"), Linkname: target, Mode: 0o777})
	}
}

func (r *rootfs) file(name string, mode int64, content []byte) {
	if r.err != nil {
		return
	}
	r.err = r.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(name, "/"), Mode: mode, Size: int64(len(content))})
	if r.err == nil {
		_, r.err = r.tw.Write(content)
	}
}

// copyFile adds the host file src (symlinks followed) as name.
func (r *rootfs) copyFile(name, src string, mode int64) {
	if r.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		r.err = err
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		r.err = err
		return
	}
	r.err = r.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(name, "/"), Mode: mode, Size: st.Size()})
	if r.err == nil {
		_, r.err = io.Copy(r.tw, f)
	}
}

// binary adds a host program as name and, if it is dynamically linked, the
// libraries ldd names for it, at their host paths.
func (r *rootfs) binary(name, src string, libs map[string]bool) {
	r.copyFile(name, src, 0o755)
	out, err := exec.Command("ldd", src).Output()
	if err != nil {
		return // "not a dynamic executable"
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		var lib string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		}
		if lib != "" && !libs[lib] {
			libs[lib] = true
			r.copyFile(lib, lib, 0o755)
		}
	}
}

func (r *rootfs) close() error {
	if r.err == nil {
		r.err = r.tw.Close()
	}
	if r.err == nil {
		r.err = r.buf.Flush()
	}
	if err := r.f.Close(); r.err == nil {
		r.err = err
	}
	return r.err
}

// finalStage returns the last stage of a Dockerfile (from its last FROM).
func finalStage(dockerfile []byte) string {
	lines := strings.Split(string(dockerfile), "\n")
	last := 0
	for i, l := range lines {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(l)), "FROM ") {
			last = i
		}
	}
	return strings.Join(lines[last:], "\n")
}
