package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/mirrorfill"
)

// mirFanIn is a derivation depending on n small ones and one of 3 MiB (a NAR
// of several blocks), each referenced at run time: a closure of n+2 paths
// that one nix-build builds one after the other, the hook firing after each.
func mirFanIn(nonce string, n int) string {
	return fmt.Sprintf(`let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
  deps = builtins.genList (i: mk "fan-dep-${toString i}-%[1]s" "echo dep ${toString i} > $out") %[2]d;
  big = mk "fan-big-%[1]s" "head -c 3145728 /dev/urandom > $out";
in derivation {
  name = "fan-top-%[1]s";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" "mkdir $out && echo $deps $big > $out/refs" ];
  inherit deps big;
}
`, nonce, n)
}

// mirRun runs the nix-ipfs binary to completion and returns its stdout
// and stderr.
func mirRun(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "nix-ipfs"), args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func mirMustRun(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string) {
	t.Helper()
	o, e, err := mirRun(t, bin, env, args...)
	if err != nil {
		t.Fatalf("nix-ipfs %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, o, e)
	}
	return o, e
}

func mirEnv(natsURL, kuboAPI string) []string {
	return []string{
		"NIX_IPFS_NATS_URL=" + natsURL,
		"NIX_IPFS_KUBO_API=" + kuboAPI,
		"NIX_IPFS_LOG_FORMAT=console",
		"NIX_IPFS_LOG_LEVEL=debug",
	}
}

// mirPins returns a node's recursive pins through its RPC API.
func mirPins(t *testing.T, k *testenv.Kubo) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pins, err := k.Client.Pins(ctx)
	if err != nil {
		t.Fatalf("pins of %s: %v", k.API, err)
	}
	m := map[string]bool{}
	for _, c := range pins {
		m[c.String()] = true
	}
	return m
}

func mirMissing(have map[string]bool, want []string) []string {
	var out []string
	for _, c := range want {
		if !have[c] {
			out = append(out, c)
		}
	}
	return out
}

func mirPinnedEvents(t *testing.T, js jetstream.JetStream, mirrorName string) map[string]*events.Pinned {
	t.Helper()
	m := map[string]*events.Pinned{}
	for _, e := range streamEvents(t, js, events.SubjectPinned(mirrorName)) {
		p := e.(*events.Pinned)
		m[p.CID] = p
	}
	return m
}

func mirDeadLetters(t *testing.T, js jetstream.JetStream) []*events.DeadLetter {
	t.Helper()
	var out []*events.DeadLetter
	for _, e := range streamEvents(t, js, events.SubjectDeadPrefix+">") {
		out = append(out, e.(*events.DeadLetter))
	}
	return out
}

func mirAckFloor(t *testing.T, js jetstream.JetStream, durable string) (acked uint64, pending uint64, ackPending int) {
	t.Helper()
	info := durableInfo(t, js, durable)
	if info == nil {
		return 0, 0, 0 // not created yet
	}
	return info.AckFloor.Consumer, info.NumPending, info.NumAckPending
}

func mirNixHash(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + nixbase32.EncodeToString(s[:])
}

// mirCatHash reads c from k and returns its NarHash-style hash.
func mirCatHash(t *testing.T, k *testenv.Kubo, c string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := k.Client.Cat(ctx, cid.MustParse(c))
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", err
	}
	return "sha256:" + nixbase32.EncodeToString(h.Sum(nil)), nil
}

func peerAddr(t *testing.T, k *testenv.Kubo) (ipfs.Node, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	self, err := k.Client.Self(ctx)
	if err != nil || len(self.Addrs) == 0 {
		t.Fatalf("identity of %s: %+v %v", k.API, self, err)
	}
	return self, self.Addrs[0] + "/p2p/" + self.PeerID
}

// TestMirrorEndToEnd is the mirror's proof with the real parts: a real
// nix-build of a 52-path closure through the hook, NATS, the publisher
// binary on kubo A, and the mirror binary on kubo B. The mirror pins each
// CID as its event arrives (overlapping the build), survives a SIGKILL in
// the middle, and then:
//   - Replay fills an empty third node from the stream's history;
//   - Backfill fills a fresh node from the publisher's cache, over HTTP and
//     from the directory;
//   - GC on A unpins only what mirrors confirmed, and with A's daemon
//     stopped every NAR is still fetchable from B and hashes to its NarHash.
func TestMirrorEndToEnd(t *testing.T) {
	start := time.Now()
	a := newHostA(t)
	a.startPublisher(t)
	b := testenv.StartKubo(t)
	_, js := a.nats.Connect(t)
	bin := filepath.Join(a.bin, "nix-ipfs")
	mir := testenv.StartProc(t, bin, []string{"mirror", "--name", "b", "--ack-wait", "5s", "--concurrency", "8", "--verify"},
		mirEnv(a.nats.URL, b.API)...)

	const deps = 50
	type buildResult struct {
		outs []string
		err  error
	}
	built := make(chan buildResult, 1)
	go func() {
		outs, err := a.nix.TryBuild(mirFanIn(testenv.Nonce(), deps))
		built <- buildResult{outs, err}
	}()

	// SIGKILL the mirror in the middle of the run: some events acked, the
	// build (and so the publishing) still going.
	var res *buildResult
	var killedAt uint64
	for deadline := time.Now().Add(3 * time.Minute); killedAt == 0; time.Sleep(20 * time.Millisecond) {
		select {
		case r := <-built:
			t.Fatalf("the build finished (%v) before the mirror had pinned 10 paths: could not kill it mid-run\n%s", r.err, mir.Tail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror pinned fewer than 10 paths in 3 minutes\n%s", mir.Tail(40))
		}
		if acked, pending, ackPending := mirAckFloor(t, js, mirror.Durable("b")); acked >= 10 {
			mir.Signal(syscall.SIGKILL)
			if !mir.Wait(10 * time.Second) {
				t.Fatal("mirror did not die from SIGKILL")
			}
			killedAt = acked
			t.Logf("mirror killed after %d acks (%d pending, %d unacked), build still running", acked, pending, ackPending)
		}
	}
	mir.Restart(t)

	select {
	case r := <-built:
		res = &r
	case <-time.After(4 * time.Minute):
		t.Fatal("nix-build did not finish in 4 minutes")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	top := res.outs[0]
	closure := closureOf(t, a.nix, top)
	if len(closure) != deps+2 {
		t.Fatalf("closure of %s has %d paths, want %d", top, len(closure), deps+2)
	}
	nis := a.waitPublished(t, closure, 2*time.Minute)
	var cids []string
	pathOf := map[string]string{}
	for _, p := range closure {
		cids = append(cids, nis[p].IPFSHash)
		pathOf[nis[p].IPFSHash] = p
	}
	t.Logf("built and published %d paths in %v", len(closure), time.Since(start).Round(time.Millisecond))

	testenv.Eventually(t, 2*time.Minute, "every CID pinned on B and announced", func() bool {
		if len(mirMissing(mirPins(t, b), cids)) > 0 {
			return false
		}
		ev := mirPinnedEvents(t, js, "b")
		for _, c := range cids {
			if ev[c] == nil {
				return false
			}
		}
		return true
	})
	pinnedB := mirPinnedEvents(t, js, "b")
	for _, c := range cids {
		p := pinnedB[c]
		if p.StorePath != pathOf[c] || !p.Verified || p.Bytes != int64(nis[pathOf[c]].NarSize) {
			t.Errorf("pinned event for %s: %+v", pathOf[c], p)
		}
	}

	// Pins overlapped the publishing: a pin started (its event's time less
	// its duration) before the last path of the closure was announced.
	var lastPublished time.Time
	publishedAt := map[string]time.Time{}
	for _, e := range streamEvents(t, js, events.SubjectPublished) {
		pe := e.(*events.Published)
		publishedAt[pe.CID] = pe.Time
		if pe.Time.After(lastPublished) {
			lastPublished = pe.Time
		}
	}
	early := 0
	var lags []time.Duration
	for _, c := range cids {
		pinStart := pinnedB[c].Time.Add(-time.Duration(pinnedB[c].DurationMS) * time.Millisecond)
		if pinStart.Before(lastPublished) {
			early++
		}
		lags = append(lags, pinStart.Sub(publishedAt[c]))
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("%d of %d pins started before the last path was published; publish-to-pin-start lag median %v, max %v",
		early, len(cids), lags[len(lags)/2].Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond))
	if early < int(killedAt) {
		t.Errorf("only %d pins started before the last publish, yet %d were acked before the kill", early, killedAt)
	}
	if dead := mirDeadLetters(t, js); len(dead) != 0 {
		t.Errorf("%d dead letters, first: %+v", len(dead), dead[0])
	}

	_, addrA := peerAddr(t, a.kubo)

	t.Run("Replay", func(t *testing.T) {
		c := testenv.StartKubo(t)
		state := filepath.Join(t.TempDir(), "replay-c.seq")
		env := mirEnv(a.nats.URL, c.API)
		out, stderr := mirMustRun(t, a.bin, env, "replay", "--mirror", "c", "--all", "--state-file", state,
			"--progress", "lines", "--progress-interval", "200ms")
		t.Logf("replay: %s", out)
		if m := mirMissing(mirPins(t, c), cids); len(m) > 0 {
			t.Fatalf("%d CIDs not pinned on C after replay: %v", len(m), m)
		}
		wantTotal := fmt.Sprintf("replay c: %d to do", len(publishedAt))
		if !strings.Contains(stderr, wantTotal) || !strings.Contains(stderr, fmt.Sprintf("%d/%d (100%%)", len(publishedAt), len(publishedAt))) {
			t.Errorf("progress lines lack %q or the final count:\n%s", wantTotal, stderr)
		}
		if ev := mirPinnedEvents(t, js, "c"); len(mirMissing(mirKeys(ev), cids)) > 0 {
			t.Errorf("replay announced %d of %d pins", len(ev), len(cids))
		}
		seq, ok, err := mirrorfill.ReadState(state)
		if !ok || err != nil || seq == 0 {
			t.Fatalf("state file after replay: %d %v %v", seq, ok, err)
		}
		// Resuming finds nothing new; replaying all again skips everything fast.
		if out, _ := mirMustRun(t, a.bin, env, "replay", "--mirror", "c", "--resume", "--state-file", state); !strings.Contains(out, "nothing to replay") {
			t.Errorf("resume after a complete replay: %s", out)
		}
		if out, _ := mirMustRun(t, a.bin, env, "replay", "--mirror", "c", "--all", "--state-file", state, "--progress", "none"); !strings.Contains(out, fmt.Sprintf("0 pinned, %d already pinned", len(publishedAt))) {
			t.Errorf("second replay: %s", out)
		}
	})

	t.Run("Backfill", func(t *testing.T) {
		d := testenv.StartKubo(t)
		env := mirEnv("nats://127.0.0.1:1", d.API) // backfill without --mirror needs no NATS
		half := closure[:len(closure)/2]
		list := filepath.Join(t.TempDir(), "paths")
		os.WriteFile(list, []byte(strings.Join(half, "\n")+"\n"), 0o644)
		srv := httptest.NewServer(http.FileServer(http.Dir(a.cache)))
		defer srv.Close()
		out, _ := mirMustRun(t, a.bin, env, "backfill", "--cache", srv.URL, "--paths-from", list, "--peer", addrA, "--progress", "lines")
		t.Logf("backfill over HTTP: %s", out)
		have := mirPins(t, d)
		for _, p := range half {
			if !have[nis[p].IPFSHash] {
				t.Errorf("%s not pinned after the HTTP backfill", p)
			}
		}
		out, _ = mirMustRun(t, a.bin, env, "backfill", "--cache", a.cache, "--peer", addrA, "--verify", "--progress", "lines")
		t.Logf("backfill from the directory: %s", out)
		if !strings.Contains(out, fmt.Sprintf("%d pinned, %d already pinned, 0 failed", len(closure)-len(half), len(half))) {
			t.Errorf("directory backfill: %s", out)
		}
		if m := mirMissing(mirPins(t, d), cids); len(m) > 0 {
			t.Errorf("%d CIDs not pinned after backfill: %v", len(m), m)
		}
	})

	t.Run("GC", func(t *testing.T) {
		env := mirEnv(a.nats.URL, a.kubo.API)
		before := mirPins(t, a.kubo)
		if m := mirMissing(before, cids); len(m) > 0 {
			t.Fatalf("A lacks %d pins before gc", len(m))
		}
		out, _ := mirMustRun(t, a.bin, env, "gc", "--min-mirrors", "1", "--dry-run")
		for _, c := range cids {
			if !strings.Contains(out, "would unpin "+c) {
				t.Errorf("dry run does not list %s (%s)", c, pathOf[c])
			}
		}
		if m := mirMissing(mirPins(t, a.kubo), cids); len(m) > 0 {
			t.Fatalf("dry run unpinned %d CIDs", len(m))
		}
		// Two mirror nodes confirmed everything (b, and c by replay): three
		// is more than any CID has.
		if out, _ := mirMustRun(t, a.bin, env, "gc", "--min-mirrors", "3"); !strings.Contains(out, "unpinned 0 of") {
			t.Errorf("gc --min-mirrors 3: %s", out)
		}
		if m := mirMissing(mirPins(t, a.kubo), cids); len(m) > 0 {
			t.Fatalf("gc --min-mirrors 3 unpinned %d CIDs", len(m))
		}
		out, _ = mirMustRun(t, a.bin, env, "gc", "--min-mirrors", "1")
		t.Logf("gc: %s", mirLastLine(out))
		after := mirPins(t, a.kubo)
		for _, c := range cids {
			if after[c] {
				t.Errorf("%s still pinned on A after gc", c)
			}
		}
		// Only confirmed CIDs went: whatever else A had pinned stays.
		for c := range before {
			if pathOf[c] == "" && !after[c] {
				t.Errorf("gc unpinned %s, which no mirror confirmed", c)
			}
		}
		// The blocks are gone from A's repository, the cache is untouched.
		local := map[string]bool{}
		for _, f := range strings.Fields(a.kubo.IPFS(t, "refs", "local")) {
			if c, err := cid.Decode(f); err == nil {
				local[string(c.Hash())] = true
			}
		}
		for _, p := range closure {
			if local[string(cid.MustParse(nis[p].IPFSHash).Hash())] {
				t.Errorf("%s: root block still in A's repository after repo gc", p)
			}
			if _, err := os.Stat(filepath.Join(a.cache, nis[p].URL)); err != nil {
				t.Errorf("%s: NAR file gone from the cache: %v", p, err)
			}
		}

		a.kubo.Stop(t)
		for _, p := range closure {
			h, err := mirCatHash(t, b, nis[p].IPFSHash)
			if err != nil {
				t.Errorf("%s: cat %s from B with A down: %v", p, nis[p].IPFSHash, err)
				continue
			}
			if h != nis[p].NarHash {
				t.Errorf("%s: B's bytes hash to %s, NarHash is %s", p, h, nis[p].NarHash)
			}
		}
	})
	t.Logf("whole scenario took %v", time.Since(start).Round(time.Millisecond))
}

func mirKeys[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

func mirLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// mirStorePath returns a syntactically valid store path for name.
func mirStorePath(name string) string {
	s := sha256.Sum256([]byte(name))
	return "/nix/store/" + nixbase32.EncodeToString(s[:20]) + "-" + name
}

// mirPublished is a "published" event for a CID as the publisher would
// announce it, with narBytes the bytes its NarHash and NarSize describe.
func mirPublished(name, c string, narBytes []byte, publisher ipfs.Node) *events.Published {
	h := mirNixHash(narBytes)
	ev := &events.Published{
		Host: "test", StoreDir: "/nix/store", StorePath: mirStorePath(name),
		NarHash: h, NarSize: int64(len(narBytes)), References: []string{},
		CacheURL: "file:///nowhere", NarURL: "nar/" + strings.TrimPrefix(h, "sha256:") + ".nar", CID: c,
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: publisher.PeerID, Addrs: publisher.Addrs},
	}
	events.Seal(ev)
	return ev
}

// TestMirrorDeadLettersUnfetchableAndCorrupt: a "published" event whose CID
// exists nowhere ends in the dead-letter subject after its attempts (each
// cut by --pin-timeout), one whose bytes do not match its NarHash is
// dead-lettered as corrupt and unpinned, and the mirror goes on pinning the
// events after them.
func TestMirrorDeadLettersUnfetchableAndCorrupt(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	a, b := testenv.StartKubo(t), testenv.StartKubo(t)
	nodeA, _ := peerAddr(t, a)
	add := func(data []byte) string {
		c, err := a.Client.Add(ctx, bytes.NewReader(data), ipfs.DefaultParams(), true)
		if err != nil {
			t.Fatal(err)
		}
		return c.String()
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	publish := func(ev *events.Published) {
		if _, err := events.Publish(ctx, js, events.SubjectPublished, ev); err != nil {
			t.Fatal(err)
		}
	}

	// A CID of bytes no node has.
	ghostBytes := random(1000)
	sum, _ := mh.Sum(ghostBytes, mh.SHA2_256, -1)
	ghost := mirPublished("ghost", cid.NewCidV1(cid.Raw, sum).String(), ghostBytes, nodeA)
	// Bytes that A has, announced with another NarHash.
	held := random(600 << 10)
	corrupt := mirPublished("corrupt", add(held), random(600<<10), nodeA)
	good1Bytes := random(700 << 10)
	good1 := mirPublished("good-1", add(good1Bytes), good1Bytes, nodeA)
	publish(ghost)
	publish(corrupt)
	publish(good1)

	bin := testenv.Binaries(t)
	metricsAddr := mirFreeAddr(t)
	testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"mirror", "--name", "b", "--verify",
		"--pin-timeout", "2s", "--max-attempts", "2", "--backoff", "200ms", "--ack-wait", "5s", "--concurrency", "2",
		"--metrics-addr", metricsAddr},
		mirEnv(n.URL, b.API)...)

	var dead []*events.DeadLetter
	testenv.Eventually(t, 90*time.Second, "two dead letters", func() bool {
		dead = mirDeadLetters(t, js)
		return len(dead) >= 2
	})
	byKind := map[string]*events.DeadLetter{}
	for _, d := range dead {
		byKind[d.Kind] = d
		if d.Consumer != mirror.Durable("b") || d.Subject != events.SubjectPublished {
			t.Errorf("dead letter %+v", d)
		}
	}
	if d := byKind["exhausted"]; d == nil || d.Deliveries != 2 || !strings.Contains(d.Reason, ghost.CID) || !strings.Contains(d.Reason, "pin timeout") {
		t.Errorf("unfetchable CID's dead letter: %+v", d)
	} else if ev, err := events.Decode(d.Payload); err != nil || events.Head(ev).ID != ghost.ID {
		t.Errorf("dead letter payload is not the ghost event: %v", err)
	}
	if d := byKind["corrupt"]; d == nil || !strings.Contains(d.Reason, corrupt.CID) {
		t.Errorf("corrupt CID's dead letter: %+v", d)
	}

	// The event after them was pinned, and one published now is too.
	good2Bytes := random(300 << 10)
	good2 := mirPublished("good-2", add(good2Bytes), good2Bytes, nodeA)
	publish(good2)
	testenv.Eventually(t, 60*time.Second, "good events pinned on B", func() bool {
		p := mirPins(t, b)
		return p[good1.CID] && p[good2.CID]
	})
	pins := mirPins(t, b)
	if pins[corrupt.CID] || pins[ghost.CID] {
		t.Errorf("B holds a dead-lettered CID: corrupt %v ghost %v", pins[corrupt.CID], pins[ghost.CID])
	}
	pinned := mirPinnedEvents(t, js, "b")
	for _, ev := range []*events.Published{good1, good2} {
		if p := pinned[ev.CID]; p == nil || !p.Verified || p.StorePath != ev.StorePath {
			t.Errorf("pinned event for %s: %+v", ev.StorePath, p)
		}
	}
	if pinned[corrupt.CID] != nil || pinned[ghost.CID] != nil {
		t.Error("a dead-lettered CID was announced as pinned")
	}
	if len(mirDeadLetters(t, js)) != 2 {
		t.Errorf("more dead letters than the two bad events")
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`nixipfs_mirror_pins_total{kind="",result="pinned"} 2`,
		`nixipfs_mirror_pins_total{kind="corrupt",result="failed"} 1`,
		`nixipfs_mirror_pins_total{kind="not_yet",result="failed"} 2`,
		`nixipfs_mirror_events_total{outcome="dead_lettered"} 2`,
		`nixipfs_mirror_pin_seconds_count 2`,
		"nixipfs_mirror_pinned_bytes_total " + strconv.FormatFloat(float64(len(good1Bytes)+len(good2Bytes)), 'g', -1, 64),
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// mirFreeAddr returns a loopback address with a port free a moment ago.
func mirFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestMirrorCommandsHelpAndChecks: every command explains itself, refuses
// bad settings with exit code 2 and a reason, and --config-check accepts
// good ones without touching the network.
func TestMirrorCommandsHelpAndChecks(t *testing.T) {
	bin := testenv.Binaries(t)
	env := []string{"NIX_IPFS_NATS_URL=nats://127.0.0.1:1", "NIX_IPFS_KUBO_API=http://127.0.0.1:1"}
	for _, tc := range []struct {
		cmd  string
		help []string
		bad  []string // args refused, and what the error says
		good []string // args accepted by --config-check
	}{
		{"mirror", []string{"--name", "--pin-timeout", "--max-attempts", "--verify", "--concurrency", "--metrics-addr"},
			[]string{"--name", "a.b", "letters"}, []string{"--name", "b"}},
		{"replay", []string{"--mirror", "--all", "--from-seq", "--since", "--resume", "--state-file", "--progress"},
			[]string{"--mirror", "c", "--all", "--from-seq", "3", "give one"}, []string{"--mirror", "c", "--since", "36h"}},
		{"backfill", []string{"--cache", "--paths-from", "--mirror", "--peer"},
			[]string{"--cache", "https://cache.example.org", "--paths-from"}, []string{"--cache", "/var/cache/nix"}},
		{"gc", []string{"--min-mirrors", "--dry-run", "--kubo-api"},
			[]string{"--min-mirrors", "0", "at least 1"}, []string{"--min-mirrors", "2", "--dry-run"}},
	} {
		out, _, err := mirRun(t, bin, env, tc.cmd, "--help")
		if err != nil {
			t.Errorf("%s --help: %v", tc.cmd, err)
		}
		for _, f := range tc.help {
			if !strings.Contains(out, "  "+f+" ") && !strings.Contains(out, "  "+f+"\n") {
				t.Errorf("%s --help does not describe %s", tc.cmd, f)
			}
		}
		_, stderr, err := mirRun(t, bin, env, append([]string{tc.cmd}, tc.bad[:len(tc.bad)-1]...)...)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(stderr, tc.bad[len(tc.bad)-1]) {
			t.Errorf("%s %v: %v, %q; want exit 2 saying %q", tc.cmd, tc.bad, err, stderr, tc.bad[len(tc.bad)-1])
		}
		out, stderr, err = mirRun(t, bin, env, append([]string{tc.cmd, "--config-check"}, tc.good...)...)
		if err != nil || !strings.Contains(out, "nats-url = nats://127.0.0.1:1") {
			t.Errorf("%s --config-check %v: %v\n%s%s", tc.cmd, tc.good, err, out, stderr)
		}
	}
}
