package testenv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a JetStream cluster of real nats-server processes on
// loopback, each with a client port, a route port and a leaf-node port of
// its own. Servers can be killed, stopped and started again on the same
// ports and stores, to test what the pipeline survives.
type NATSCluster struct {
	Name  string
	Nodes []*NATSProc
}

// NATSProc is one nats-server process, a cluster member or a leaf node.
type NATSProc struct {
	Name     string
	URL      string // nats://127.0.0.1:<port>
	LeafURL  string // nats-leaf://127.0.0.1:<leafport>, for cluster members
	Dir      string // config, JetStream store, log
	Log      string
	bin      string
	conf     string
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	stopping bool
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StablePort returns a free loopback TCP port for a server that a test
// stops and starts again on the same port. FreePort's ports come from the
// kernel's ephemeral range, where any listener on port 0 and any outgoing
// connection of any process (the test packages run in parallel) can take
// the port while the server is down, and the restart then fails with
// "address already in use". StablePort picks below that range instead,
// where the kernel hands nothing out, and holds a lock on the port until
// the test ends, so that no other test, in this process or another, is
// given it meanwhile.
func StablePort(t testing.TB) int {
	t.Helper()
	lo := ephemeralLow()
	const base = 10000
	if lo-base < 1000 {
		return FreePort(t) // a range that leaves no room below it
	}
	dir := filepath.Join(os.TempDir(), "nix-ipfs-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for try := 0; try < 200; try++ {
		p := base + rand.IntN(lo-base)
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprint(p)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			t.Fatal(err)
		}
		// The lock goes with the file descriptor: when the test ends, or
		// the process dies.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			f.Close()
			continue
		}
		l.Close()
		t.Cleanup(func() { f.Close() })
		return p
	}
	t.Fatalf("no free port between %d and %d", base, lo)
	return 0
}

// ephemeralLow is the bottom of the kernel's ephemeral port range
// (32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 0 {
		return 32768
	}
	return lo
}

// StartNATSCluster starts n clustered nats-server processes with JetStream
// and waits until the cluster has a meta leader, so streams can be created.
// They are killed when the test ends. With n = 1 it is one standalone
// server process.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin := NeedProgram(t, "nats-server")
	c := &NATSCluster{Name: "nixipfs-test"}
	type ports struct{ client, route, leaf int }
	ps := make([]ports, n)
	for i := range ps {
		ps[i] = ports{StablePort(t), StablePort(t), StablePort(t)}
	}
	for i := 0; i < n; i++ {
		var routes []string
		for j := 0; j < n; j++ {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ps[j].route))
			}
		}
		p := &NATSProc{
			Name:    fmt.Sprintf("n%d", i+1),
			URL:     fmt.Sprintf("nats://127.0.0.1:%d", ps[i].client),
			LeafURL: fmt.Sprintf("nats-leaf://127.0.0.1:%d", ps[i].leaf),
			Dir:     t.TempDir(),
			bin:     bin,
		}
		cluster := fmt.Sprintf(`cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [ %s ]
}`, c.Name, ps[i].route, strings.Join(routes, ", "))
		if n == 1 {
			cluster = "# one server: no cluster"
		}
		p.conf = fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 2GB
}
%s
leafnodes {
  listen: 127.0.0.1:%d
  # Tests put proxies in front of these ports to cut a leaf's uplink: a
  # leaf must not learn the real ports and go around them.
  no_advertise: true
}
`, p.Name, ps[i].client, filepath.Join(p.Dir, "js"), cluster, ps[i].leaf)
		c.Nodes = append(c.Nodes, p)
	}
	for _, p := range c.Nodes {
		p.Start(t)
		t.Cleanup(func() {
			p.Kill()
			if t.Failed() {
				t.Logf("%s log tail:\n%s", p.Name, tail(p.Log, 30))
			}
		})
	}
	c.WaitReady(t, 2*time.Minute)
	return c
}

// StartNATSLeaf starts a nats-server without JetStream whose leaf-node
// connection goes to remotes (nats-leaf:// URLs of the cluster, or of
// proxies in front of it): what runs next to a builder in another site.
func StartNATSLeaf(t testing.TB, remotes []string) *NATSProc {
	t.Helper()
	p := &NATSProc{Name: "leaf", Dir: t.TempDir(), bin: NeedProgram(t, "nats-server")}
	port := FreePort(t)
	p.URL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	var quoted []string
	for _, r := range remotes {
		quoted = append(quoted, fmt.Sprintf("%q", r))
	}
	p.conf = fmt.Sprintf(`server_name: leaf
listen: 127.0.0.1:%d
leafnodes {
  reconnect: "1s"
  remotes: [ { urls: [ %s ] } ]
}
`, port, strings.Join(quoted, ", "))
	p.Start(t)
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s log tail:\n%s", p.Name, tail(p.Log, 30))
		}
	})
	return p
}

// URLs is the comma-separated client URL list of every member, as
// --nats-url takes it.
func (c *NATSCluster) URLs() string {
	var u []string
	for _, p := range c.Nodes {
		u = append(u, p.URL)
	}
	return strings.Join(u, ",")
}

// Node returns the member named name, or nil.
func (c *NATSCluster) Node(name string) *NATSProc {
	for _, p := range c.Nodes {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Connect returns a client connection to every member (it reconnects
// across them) and its JetStream context, closed at cleanup.
func (c *NATSCluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("connect to %s: %v", c.URLs(), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// WaitReady waits until JetStream answers through every running member
// (a meta leader is elected and each member reaches it) and, when all are
// running, until the meta leader knows every member: a stream with one
// replica per member can be placed.
func (c *NATSCluster) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	all := true
	for _, p := range c.Nodes {
		all = all && p.Running()
	}
	if all && len(c.Nodes) > 1 {
		nc, js := c.Connect(t)
		Eventually(t, timeout, fmt.Sprintf("an R%d stream placeable", len(c.Nodes)), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "TESTENV_PLACEMENT", Subjects: []string{"testenv.placement"},
				Replicas: len(c.Nodes), Storage: jetstream.MemoryStorage})
			if err != nil {
				return false
			}
			_ = js.DeleteStream(ctx, "TESTENV_PLACEMENT")
			return true
		})
		nc.Close()
	}
	for _, p := range c.Nodes {
		if !p.Running() {
			continue
		}
		Eventually(t, timeout, "JetStream ready through "+p.Name, func() bool {
			nc, err := nats.Connect(p.URL, nats.Timeout(2*time.Second))
			if err != nil {
				return false
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = js.AccountInfo(ctx)
			return err == nil
		})
	}
}

// StreamLeader returns the member that leads stream, waiting up to timeout
// for one to be elected.
func (c *NATSCluster) StreamLeader(t testing.TB, js jetstream.JetStream, stream string, timeout time.Duration) *NATSProc {
	t.Helper()
	var leader *NATSProc
	Eventually(t, timeout, "a leader for stream "+stream, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		leader = c.Node(info.Cluster.Leader)
		return leader != nil
	})
	return leader
}

// Start starts (or restarts) the server on its ports and store.
func (p *NATSProc) Start(t testing.TB) {
	t.Helper()
	conf := filepath.Join(p.Dir, "nats-server.conf")
	if err := os.WriteFile(conf, []byte(p.conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Log = filepath.Join(p.Dir, "nats-server.log")
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start nats-server %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done, p.stopping = cmd, done, false
	p.mu.Unlock()
	// Ready once it accepts clients (the port can linger after a kill).
	Eventually(t, time.Minute, "nats-server "+p.Name+" accepting clients", func() bool {
		select {
		case <-done:
			t.Fatalf("nats-server %s exited at start:\n%s", p.Name, tail(p.Log, 20))
		default:
		}
		nc, err := nats.Connect(p.URL, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		nc.Close()
		return true
	})
}

// Kill SIGKILLs the server and waits for it to exit.
func (p *NATSProc) Kill() { p.signal(syscall.SIGKILL) }

// Stop shuts the server down cleanly (SIGTERM) and waits for it to exit.
func (p *NATSProc) Stop() { p.signal(syscall.SIGTERM) }

func (p *NATSProc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Running reports whether the process is up.
func (p *NATSProc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TCPProxy forwards a loopback port to a target address until cut: a
// link that a test can break and mend. Cut closes every open connection
// and refuses new ones; Mend accepts them again.
type TCPProxy struct {
	Addr   string // 127.0.0.1:<port> to dial instead of the target
	target string
	ln     net.Listener
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

// StartTCPProxy listens on a free loopback port and forwards to target.
func StartTCPProxy(t testing.TB, target string) *TCPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &TCPProxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

func (p *TCPProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// Cut closes every connection through the proxy and refuses new ones.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Mend lets connections through again.
func (p *TCPProxy) Mend() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}
