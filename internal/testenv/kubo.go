package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// Kubo is a real kubo daemon on a repository of its own, for one test.
type Kubo struct {
	Repo   string     // IPFS_PATH
	API    string     // RPC API base URL, http://127.0.0.1:<port>; stable across Stop/Start
	Client *ipfs.Kubo // a client of API
	// Gateway is the daemon's HTTP gateway base URL,
	// http://127.0.0.1:<port> ("" if it has none), stable across
	// Stop/Start like API.
	Gateway string
	Log     string // the daemon's stdout and stderr, across restarts

	bin  string
	conf kuboConfig

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	werr error         // cmd.Wait's result, valid once done is closed
}

type kuboConfig struct {
	offline bool
	config  [][2]string // key, JSON value
}

// KuboOption configures StartKubo.
type KuboOption func(*kuboConfig)

// KuboOffline starts the daemon with --offline: no swarm, so it neither
// fetches nor serves blocks, but starts faster and touches no network.
func KuboOffline() KuboOption { return func(c *kuboConfig) { c.offline = true } }

// KuboFilestore enables Experimental.FilestoreEnabled, which nocopy adds
// need.
func KuboFilestore() KuboOption {
	return KuboConfig("Experimental.FilestoreEnabled", "true")
}

// KuboConfig sets a config key to a JSON value before the first start, as
// `ipfs config --json key value` would.
func KuboConfig(key, jsonValue string) KuboOption {
	return func(c *kuboConfig) { c.config = append(c.config, [2]string{key, jsonValue}) }
}

const (
	kuboStartTimeout = 60 * time.Second
	kuboStopTimeout  = 30 * time.Second
	kuboCLITimeout   = 2 * time.Minute
)

// StartKubo initialises a repository with the test profile (loopback
// addresses, random ports, no bootstrap peers, no autoconf) and starts a
// daemon on it, online unless KuboOffline is given, so that two of them
// exchange blocks once connected. The daemon is stopped when the test ends,
// and its log printed if the test failed.
func StartKubo(t testing.TB, opts ...KuboOption) *Kubo {
	t.Helper()
	k := &Kubo{bin: NeedProgram(t, "ipfs")}
	for _, o := range opts {
		o(&k.conf)
	}
	dir := t.TempDir()
	k.Repo = filepath.Join(dir, "repo")
	// Outside the repository, so that nothing kubo does to its own
	// directory can disturb it.
	k.Log = filepath.Join(dir, "daemon.log")
	t.Cleanup(func() {
		k.shutdown(t)
		if t.Failed() {
			t.Logf("kubo daemon log %s (tail):\n%s", k.Log, kuboLogTail(k.Log, 60))
		}
	})

	k.IPFS(t, "init", "--profile=test")
	// Fixed ports rather than the test profile's port 0, so that a restart
	// comes back at the same addresses (clients hold the API URL, peers
	// the swarm address), from below the ephemeral range, so that nothing
	// takes them while the daemon is down.
	k.IPFS(t, "config", "--json", "Addresses", fmt.Sprintf(
		`{"API": "/ip4/127.0.0.1/tcp/%d", "Gateway": "/ip4/127.0.0.1/tcp/%d", "Swarm": ["/ip4/127.0.0.1/tcp/%d"], "Announce": [], "AppendAnnounce": [], "NoAnnounce": []}`,
		StablePort(t), StablePort(t), StablePort(t)))
	for _, kv := range k.conf.config {
		k.IPFS(t, "config", "--json", kv[0], kv[1])
	}
	k.Start(t)
	return k
}

// PID is the running daemon's process ID, 0 when it is not running (the
// bench reads its CPU time).
func (k *Kubo) PID() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		return 0
	}
	return k.cmd.Process.Pid
}

// FilestoreRoot is the directory under which files must lie for a nocopy
// add: kubo's filestore refuses references outside the parent directory of
// IPFS_PATH.
func (k *Kubo) FilestoreRoot() string { return filepath.Dir(k.Repo) }

// env is the environment of every ipfs process: the caller's, with this
// repository, and without the telemetry that kubo would otherwise send
// from tests.
func (k *Kubo) env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "IPFS_PATH=") && !strings.HasPrefix(e, "IPFS_TELEMETRY=") {
			env = append(env, e)
		}
	}
	return append(env, "IPFS_PATH="+k.Repo, "IPFS_TELEMETRY=off")
}

// Start starts the daemon on the existing repository: same peer ID, and
// after the first start the same API and swarm ports. It returns once the
// API answers.
func (k *Kubo) Start(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd != nil {
		t.Fatalf("kubo %s: already running", k.Repo)
	}
	// A killed daemon leaves its api file behind; waiting for the file
	// would then return before the new daemon is up.
	apiFile := filepath.Join(k.Repo, "api")
	if err := os.Remove(apiFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("kubo: %v", err)
	}
	logf, err := os.OpenFile(k.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("kubo: %v", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s ipfs daemon start\n", time.Now().Format(time.RFC3339Nano))

	args := []string{"daemon"}
	if k.conf.offline {
		args = append(args, "--offline")
	}
	cmd := exec.Command(k.bin, args...)
	cmd.Env = k.env()
	cmd.Dir = k.Repo
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = kuboSysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubo: start daemon: %v", err)
	}
	done := make(chan struct{})
	k.cmd, k.done = cmd, done
	go func() {
		err := cmd.Wait()
		k.werr = err
		close(done)
	}()

	deadline := time.Now().Add(kuboStartTimeout)
	var lastErr error
	for {
		select {
		case <-done:
			k.cmd = nil
			t.Fatalf("kubo daemon (%s) exited during start: %v\n%s", k.Repo, k.werr, kuboLogTail(k.Log, 40))
		default:
		}
		if time.Now().After(deadline) {
			k.killLocked()
			t.Fatalf("kubo daemon (%s) not answering after %v: %v\n%s", k.Repo, kuboStartTimeout, lastErr, kuboLogTail(k.Log, 40))
		}
		lastErr = k.ready(apiFile)
		if lastErr == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready reports whether the daemon has written its api file and answers on
// it, dialling a client at the first success.
func (k *Kubo) ready(apiFile string) error {
	b, err := os.ReadFile(apiFile)
	if err != nil {
		return err
	}
	addr := strings.TrimSpace(string(b))
	url, err := ipfs.ResolveAPI(addr)
	if err != nil {
		return err
	}
	if k.API != "" && url != k.API {
		return fmt.Errorf("daemon came back at %s, not %s", url, k.API)
	}
	c := k.Client
	if c == nil {
		if c, err = ipfs.Dial(url); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		return err
	}
	k.API, k.Client = url, c
	// kubo writes the api file before it starts its gateway, and says
	// "Daemon is ready" once every server is up.
	log, _ := os.ReadFile(k.Log)
	if i := bytes.LastIndex(log, []byte("ipfs daemon start\n")); i < 0 || !bytes.Contains(log[i:], []byte("Daemon is ready")) {
		return errors.New("daemon not ready yet")
	}
	// Absent when the daemon has no gateway (a test may configure none).
	if gw, err := os.ReadFile(filepath.Join(k.Repo, "gateway")); err == nil {
		k.Gateway = strings.TrimSpace(string(gw))
	}
	return nil
}

// kuboSysProcAttr puts the daemon in its own process group, so that
// stopping it reaches anything it spawned, and on Linux has the kernel
// kill it if the test binary dies without running its cleanups (a panic,
// a -timeout). Pdeathsig is set by name because only Linux has it.
func kuboSysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
	return attr
}

// Stop stops the daemon as an operator would (SIGTERM, letting it flush and
// remove its api file) and waits for it; the repository stays.
func (k *Kubo) Stop(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		t.Fatalf("kubo %s: not running", k.Repo)
	}
	if err := k.stopLocked(kuboStopTimeout); err != nil {
		t.Fatalf("kubo %s: %v\n%s", k.Repo, err, kuboLogTail(k.Log, 40))
	}
}

// Kill kills the daemon with SIGKILL, as a crash would: its api file and
// any unflushed state stay behind.
func (k *Kubo) Kill(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		t.Fatalf("kubo %s: not running", k.Repo)
	}
	k.killLocked()
}

func (k *Kubo) stopLocked(timeout time.Duration) error {
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-k.done:
		k.cmd = nil
		return nil
	case <-time.After(timeout):
		k.killLocked()
		return fmt.Errorf("daemon ignored SIGTERM for %v and was killed", timeout)
	}
}

func (k *Kubo) killLocked() {
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
	<-k.done
	k.cmd = nil
}

func (k *Kubo) shutdown(t testing.TB) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		return
	}
	if err := k.stopLocked(10 * time.Second); err != nil {
		t.Logf("kubo %s: %v", k.Repo, err)
	}
}

// IPFS runs the ipfs CLI on this repository (through the daemon's API when
// it runs) and returns its stdout, failing the test if it fails.
func (k *Kubo) IPFS(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kuboCLITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = k.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ipfs %s (IPFS_PATH=%s): %v\n%s", strings.Join(args, " "), k.Repo, err, stderr.String())
	}
	return stdout.String()
}

// kuboLogTail returns the last n lines of the file at name, for failure messages.
func kuboLogTail(name string, n int) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// StartClientOf starts a kubo connected to a, and a Reader of it that
// reads its block store straight: what a substituter beside its kubo
// sees, fetching from a.
func StartClientOf(t testing.TB, a *Kubo, opts ...KuboOption) (*Kubo, *ipfs.Reader) {
	t.Helper()
	ctx := context.Background()
	self, err := a.Client.Self(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := StartKubo(t, opts...)
	if err := c.Client.Connect(ctx, self); err != nil {
		t.Fatal(err)
	}
	rd, err := ipfs.NewReader(c.Client, "", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	rd.UseBlockStore(c.Repo)
	return c, rd
}
