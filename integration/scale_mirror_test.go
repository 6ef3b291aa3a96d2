package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/scalestate"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// scaleNode is a kubo's identity as the events name it.
func scaleNode(t *testing.T, k *testenv.Kubo) events.Node {
	n, _ := peerAddr(t, k)
	return events.Node{PeerID: n.PeerID, Addrs: n.Addrs}
}

// scaleWaitCaughtUp waits until the mirror's consumer has acked every
// event up to the stream's last.
func scaleWaitCaughtUp(t *testing.T, js jetstream.JetStream, durable string, m *testenv.Proc, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	str, err := js.Stream(ctx, events.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	testenv.Eventually(t, timeout, "the mirror through the stream", func() bool {
		if m.Wait(0) {
			t.Fatalf("the mirror exited:\n%s", m.Tail(40))
		}
		c := durableInfo(t, js, durable)
		return c != nil && c.AckFloor.Stream >= last && c.NumAckPending == 0
	})
}

// procField reads a number from /proc/PID/FILE ("status": kB, returned in
// bytes; "io": bytes).
func procField(t *testing.T, pid int, file, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			if len(f) > 1 && f[1] == "kB" {
				n *= 1024
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/%s has no %s", pid, file, field)
	return 0
}

// TestMirrorScaleSmoke is the scale section's mirror part at 20,000 paths
// (docs/BENCHMARKS.md, "Scale"), checking its properties, not its times:
// a mirror whose node holds 20,000 pins and whose --cache-dir holds 20,000
// narinfos goes through a 20,000-event history in bounded memory; a
// restart reads no narinfo and is not handed the history again; and it
// still pins a new path.
func TestMirrorScaleSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 20,000-path state")
	}
	const n = 20_000
	bin := testenv.Binaries(t)
	nats := testenv.StartNATS(t)
	_, js := nats.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kb := testenv.StartKubo(t)
	cacheDir := filepath.Join(t.TempDir(), "mirror-cache")
	st, err := scalestate.Build(ctx, scalestate.Options{Seed: "smoke", N: n, JS: js, Publisher: scaleNode(t, kb), KuboRepo: kb.Repo, CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	const name = "smoke"
	durable := mirror.Durable(name)
	env := mirEnv(nats.URL, kb.API)
	env[len(env)-1] = "NIX_IPFS_LOG_LEVEL=warn"
	m := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"mirror", "--name", name, "--cache-dir", cacheDir}, env...)
	scaleWaitCaughtUp(t, js, durable, m, 10*time.Minute)

	// Memory: a mirror that kept a few KB per event handled (a CID order
	// entry, a narinfo, a pinned event) would pass 128 MiB here; a bounded
	// one stays near its fixed 30-40 MiB.
	if hwm := procField(t, m.Cmd.Process.Pid, "status", "VmHWM"); hwm > 128<<20 {
		t.Errorf("the mirror's peak RSS through %d events: %d MiB, want under 128 MiB", n, hwm>>20)
	}
	pinned := len(mirPinnedEvents(t, js, name))
	if pinned != n {
		t.Errorf("%d pinned events after the history, want %d", pinned, n)
	}

	// A restart: the durable consumer's ack floor, not the history, says
	// where to go on; the narinfos stay unread until asked for.
	m.Signal(syscall.SIGTERM)
	if !m.Wait(time.Minute) {
		t.Fatal("the mirror did not stop")
	}
	testenv.Eventually(t, time.Minute, "the stopped mirror's pulls gone", func() bool {
		c := durableInfo(t, js, durable)
		return c != nil && c.NumWaiting == 0
	})
	before := durableInfo(t, js, durable)
	m.Restart(t)
	pid := m.Cmd.Process.Pid
	testenv.Eventually(t, time.Minute, "the restarted mirror pulling", func() bool {
		if m.Wait(0) {
			t.Fatalf("the mirror exited:\n%s", m.Tail(40))
		}
		c := durableInfo(t, js, durable)
		return c != nil && c.NumWaiting > 0
	})
	if read := procField(t, pid, "io", "rchar"); read > st.NarInfoBytes/4 {
		t.Errorf("the restarted mirror read %d bytes before it pulled; its %d narinfos are %d bytes: it reads them at start", read, n, st.NarInfoBytes)
	}
	time.Sleep(2 * time.Second)
	if after := durableInfo(t, js, durable); after.Delivered.Consumer != before.Delivered.Consumer {
		t.Errorf("the restart was delivered %d events again", after.Delivered.Consumer-before.Delivered.Consumer)
	}

	// And it still pins: a new path from another node.
	ka := testenv.StartKubo(t)
	if _, err := scalestate.Build(ctx, scalestate.Options{Seed: "smoke-new", N: 1, KuboRepo: ka.Repo}); err != nil {
		t.Fatal(err)
	}
	var fresh scalestate.Path
	if err := scalestate.Each("smoke-new", 0, 1, scaleNode(t, ka), time.Now(), func(_ int, p scalestate.Path) error { fresh = p; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := events.Publish(ctx, js, events.SubjectPublished, fresh.Event); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, "the new path pinned", func() bool {
		return mirPins(t, kb)[fresh.CID.String()]
	})
	if got := len(mirPinnedEvents(t, js, name)); got != n+1 {
		t.Errorf("%d pinned events after the restart and one new path, want %d: the restart announced the history again", got, n+1)
	}
}

// TestMirrorBackfillsWhatTheStreamDropped: once the stream's limits
// (max-age, or an operator's purge) have dropped the oldest events, a new
// mirror's durable consumer starts at the oldest event left, and the
// mirror never hears of the paths before it. `nix-ipfs backfill` from
// another mirror's --cache-dir (or host A's cache) fills that gap; then
// the new mirror holds every path, each announced and kept in its cache.
func TestMirrorBackfillsWhatTheStreamDropped(t *testing.T) {
	const n, dropped = 300, 180
	bin := testenv.Binaries(t)
	nats := testenv.StartNATS(t)
	_, js := nats.Connect(t)
	ctx := context.Background()
	str, err := events.EnsureStream(ctx, js, events.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Host A's node holds every NAR; an older mirror's cache every narinfo.
	ka := testenv.StartKubo(t)
	nodeA, addrA := peerAddr(t, ka)
	oldCache := filepath.Join(t.TempDir(), "old-mirror-cache")
	if _, err := scalestate.Build(ctx, scalestate.Options{Seed: "gap", N: n, KuboRepo: ka.Repo, CacheDir: oldCache}); err != nil {
		t.Fatal(err)
	}
	var paths []scalestate.Path
	err = scalestate.Each("gap", 0, n, events.Node{PeerID: nodeA.PeerID, Addrs: nodeA.Addrs}, time.Now().Add(-time.Hour), func(_ int, p scalestate.Path) error {
		paths = append(paths, p)
		_, err := events.Publish(ctx, js, events.SubjectPublished, p.Event)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The oldest events go, as max-age drops them.
	if err := str.Purge(ctx, jetstream.WithPurgeSequence(dropped+1)); err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n-dropped {
		t.Fatalf("the stream holds %d events after the purge, want %d", info.State.Msgs, n-dropped)
	}

	kc := testenv.StartKubo(t)
	const name = "late"
	newCache := filepath.Join(t.TempDir(), "new-mirror-cache")
	env := mirEnv(nats.URL, kc.API)
	m := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"mirror", "--name", name, "--cache-dir", newCache}, env...)
	scaleWaitCaughtUp(t, js, mirror.Durable(name), m, 5*time.Minute)
	pins := mirPins(t, kc)
	for i, p := range paths {
		if want := i >= dropped; pins[p.CID.String()] != want {
			t.Fatalf("path %d of %d: pinned %v after the mirror followed the stream, want %v (the first %d events are gone)",
				i, n, pins[p.CID.String()], want, dropped)
		}
	}

	// The backfill keeps narinfos where the mirror does, so the mirror's
	// own cache serves the backfilled paths as well.
	out, _ := mirMustRun(t, bin, env, "backfill", "--cache", oldCache, "--peer", addrA, "--mirror", name, "--cache-dir", newCache, "--progress", "lines")
	t.Logf("backfill: %s", out)
	pins = mirPins(t, kc)
	var missing []string
	for _, p := range paths {
		if !pins[p.CID.String()] {
			missing = append(missing, p.StorePath)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d paths not pinned after the backfill, e.g. %s", len(missing), n, missing[0])
	}
	if got := len(mirPinnedEvents(t, js, name)); got != n {
		t.Errorf("%d CIDs announced by mirror %s, want %d: the backfill's pins are announced too", got, name, n)
	}
	c, err := mirrorcache.Open(newCache, storepath.DefaultStoreDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		ni, err := c.Get(storepath.HashPart(p.StorePath))
		if err != nil || ni == nil || ni.IPFSHash != p.CID.String() {
			t.Fatalf("%s: the new mirror's cache has %+v (%v), want its narinfo with IPFSHash %s", p.StorePath, ni, err, p.CID)
		}
	}
}
