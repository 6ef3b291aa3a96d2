package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror"
)

// linkCut is how long the A-B link stays down: longer than libp2p's
// keep-alives, so the connection between the nodes dies and B must dial A
// again.
const linkCut = 30 * time.Second

// TestFaultNetnsLinkCut puts A's kubo and B's kubo in network namespaces of
// their own, joined by one veth pair on a /30 of their own, so the only way
// blocks travel from A to B is that link. The link is cut (ip link set down)
// in the middle of mirroring and restored: the mirror catches up by itself,
// every CID ends up pinned on B, and nothing is dead-lettered.
//
// The publisher, the mirror and NATS stay in the test's namespace and reach
// their kubo through its RPC API on a unix socket, which a namespace does
// not hide; NATS is not behind the link, so the fault is the A-B link only.
func TestFaultNetnsLinkCut(t *testing.T) {
	t.Parallel() // mostly waiting out the cut
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Unavailable(t, "the ip command (iproute2) is not installed")
	}
	bin := testenv.Binaries(t)
	if !hasCommand(t, bin, "mirror") {
		t.Skip("nix-ipfs mirror has not landed")
	}
	ipfsBin := testenv.NeedProgram(t, "ipfs")

	tag := randHex(3)
	nsA, nsB := "nixipfs-a-"+tag, "nixipfs-b-"+tag
	vethA, vethB := "nxa"+tag, "nxb"+tag // at most 15 characters
	// A /30 of 172.16.0.0/12, only ever on this veth pair between two
	// namespaces of the test's own, so it can clash with nothing. It must be
	// a private range: libp2p's TCP dialer refuses link-local 169.254/16
	// ("undialable IP"), and kubo's bitswap broadcasts wants only to peers
	// on private addresses (or peered ones), so with TEST-NET addresses B
	// would be connected to A and still never ask it for a block.
	blk, _ := rand.Int(rand.Reader, big.NewInt(64))
	addrA := fmt.Sprintf("172.31.%d.%d", 200+blk.Int64()/32, 4*(blk.Int64()%32)+1)
	addrB := fmt.Sprintf("172.31.%d.%d", 200+blk.Int64()/32, 4*(blk.Int64()%32)+2)
	for _, ns := range []string{nsA, nsB} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			testenv.Unavailable(t, fmt.Sprintf("ip netns add: %v: %s", err, out))
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipCmd(t, "link", "add", vethA, "type", "veth", "peer", "name", vethB)
	ipCmd(t, "link", "set", vethA, "netns", nsA)
	ipCmd(t, "link", "set", vethB, "netns", nsB)
	for _, c := range [][]string{
		{"-n", nsA, "addr", "add", addrA + "/30", "dev", vethA},
		{"-n", nsA, "link", "set", vethA, "up"},
		{"-n", nsA, "link", "set", "lo", "up"},
		{"-n", nsB, "addr", "add", addrB + "/30", "dev", vethB},
		{"-n", nsB, "link", "set", vethB, "up"},
		{"-n", nsB, "link", "set", "lo", "up"},
	} {
		ipCmd(t, c...)
	}

	b := newBuilder(t)
	b.nix.Env = append(b.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	kA := startNSKubo(t, ipfsBin, nsA, addrA)
	kB := startNSKubo(t, ipfsBin, nsB, addrB)

	cache := filepath.Join(t.TempDir(), "cache")
	testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"publisher"},
		"NIX_IPFS_NATS_URL="+b.nats.URL, "NIX_IPFS_KUBO_API="+kA.API, "NIX_IPFS_CACHE_DIR="+cache,
		"NIX_IPFS_SECRET_KEY_FILE="+b.nix.SecretKey, "NIX_IPFS_LOG_FORMAT=console")
	mir := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"),
		[]string{"mirror", "--name", "b", "--concurrency", "2", "--backoff", "1s,2s,4s", "--ack-wait", "10s"},
		"NIX_IPFS_NATS_URL="+b.nats.URL, "NIX_IPFS_KUBO_API="+kB.API,
		"NIX_IPFS_LOG_FORMAT=console", "NIX_IPFS_LOG_LEVEL=debug")

	// Two batches: the first is mirrored with the link up; the second is
	// built and published while the link is down, so the mirror is busy
	// with it during the cut whatever the machine's speed.
	const drvs, outsPer = 4, 5
	extra, script := multiOutputs(outsPer, 1024)
	got := map[string]string{} // store path -> CID
	build := func(name string) []string {
		outs := b.nix.Build(t, batchExpr(name+"-"+testenv.Nonce(), drvs, script, extra))
		paths := allOutputs(t, b.nix, outs)
		flushSpool(t, b)
		testenv.Eventually(t, 3*time.Minute, "every path of "+name+" published", func() bool {
			ni, bad := checkCache(cache, paths)
			for p, n := range ni {
				got[p] = n.IPFSHash
			}
			return len(bad) == 0
		})
		return paths
	}
	mirrored := func(paths []string) int {
		n, pins := 0, kB.Pins(t)
		for _, p := range paths {
			if pins[got[p]] {
				n++
			}
		}
		return n
	}
	first := build("netns-before")
	testenv.Eventually(t, 3*time.Minute, "the first batch pinned on B", func() bool { return mirrored(first) == len(first) })

	ipCmd(t, "-n", nsA, "link", "set", vethA, "down")
	second := build("netns-during")
	time.Sleep(linkCut) // the mirror tries, and fails, to fetch
	pinnedDuring := mirrored(second)
	ipCmd(t, "-n", nsA, "link", "set", vethA, "up")

	all := append(append([]string{}, first...), second...)
	testenv.Eventually(t, 4*time.Minute, "every CID pinned on B after the link is back", func() bool {
		return mirrored(all) == len(all)
	})
	_, js := b.nats.Connect(t)
	waitDrained(t, js, mirror.Durable("b"), 2*time.Minute)
	dead := deadLetters(t, js)
	for _, d := range dead {
		t.Errorf("dead letter: %s on %s: %s", d.Kind, d.Subject, d.Reason)
	}
	perCID := map[string]int{}
	for _, e := range streamEvents(t, js, events.SubjectPinned("b")) {
		perCID[e.(*events.Pinned).CID]++
	}
	lost := 0
	for p, c := range got {
		if perCID[c] == 0 {
			lost++
			t.Errorf("%s: no pinned event for %s", p, c)
		}
	}
	reliability(t, "a-b-link-cut-while-mirroring", "runs", 1, "in", len(got), "published_during_cut", len(second),
		"pinned_during_cut", pinnedDuring, "out", len(got)-lost, "retries", len(retryDelays(t, mir.Log)),
		"lost", lost, "dead", len(dead))
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// nsKubo is a kubo daemon inside a network namespace: swarm on one
// address of that namespace, RPC API and gateway on unix sockets.
type nsKubo struct {
	bin, ns, repo, sock, log string
	API                      string // /unix/... multiaddr
	cmd                      *exec.Cmd
	done                     chan struct{}
}

func startNSKubo(t *testing.T, bin, ns, addr string) *nsKubo {
	t.Helper()
	dir := t.TempDir()
	k := &nsKubo{bin: bin, ns: ns, repo: filepath.Join(dir, "repo"), sock: filepath.Join(dir, "api.sock"), log: filepath.Join(dir, "daemon.log")}
	k.API = "/unix" + k.sock
	k.cli(t, "init", "--profile=test")
	k.cli(t, "config", "Addresses.API", k.API)
	k.cli(t, "config", "Addresses.Gateway", "/unix"+filepath.Join(dir, "gw.sock"))
	k.cli(t, "config", "--json", "Addresses.Swarm", fmt.Sprintf(`["/ip4/%s/tcp/4001"]`, addr))
	logf, err := os.Create(k.log)
	if err != nil {
		t.Fatal(err)
	}
	k.cmd = exec.Command("ip", "netns", "exec", ns, bin, "daemon")
	k.cmd.Env = k.env()
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k.done = make(chan struct{})
	go func() { k.cmd.Wait(); logf.Close(); close(k.done) }()
	t.Cleanup(func() {
		syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-k.done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
			<-k.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(k.log)
			t.Logf("kubo in %s log:\n%s", ns, b)
		}
	})
	testenv.Eventually(t, time.Minute, "kubo in "+ns+" to answer", func() bool {
		select {
		case <-k.done:
			b, _ := os.ReadFile(k.log)
			t.Fatalf("kubo in %s exited:\n%s", ns, b)
		default:
		}
		_, err := k.try("--api", k.API, "id")
		return err == nil
	})
	return k
}

func (k *nsKubo) env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "IPFS_PATH=") {
			env = append(env, e)
		}
	}
	return append(env, "IPFS_PATH="+k.repo, "IPFS_TELEMETRY=off")
}

func (k *nsKubo) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = k.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ipfs %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (k *nsKubo) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := k.try(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Pins returns the node's recursive pins.
func (k *nsKubo) Pins(t *testing.T) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Fields(k.cli(t, "--api", k.API, "pin", "ls", "--type=recursive", "--quiet")) {
		m[f] = true
	}
	return m
}
