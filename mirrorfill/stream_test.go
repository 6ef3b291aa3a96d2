package mirrorfill

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/retention/gc"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// publishN puts n "published" events on the stream, each for content the
// node can fetch, and returns their CIDs in order.
func publishN(t *testing.T, js jetstream.JetStream, node *mirrortest.Node, prefix string, n int) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	for i := 0; i < n; i++ {
		data := []byte(fmt.Sprintf("%s-%d", prefix, i))
		c := node.Add(data)
		if _, err := events.Publish(context.Background(), js, events.SubjectPublished, mirrortest.Published(fmt.Sprintf("%s-%d", prefix, i), c, data)); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func pinnedEvents(t *testing.T, js jetstream.JetStream) []*events.Pinned {
	t.Helper()
	got, err := gc.ReadPinned(context.Background(), js, events.DefaultStream, nil)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestReplayInterruptedThenResumed: a replay stopped while one CID hangs
// records how far everything is done, and --resume's start pins the rest,
// announcing each CID once.
func TestReplayInterruptedThenResumed(t *testing.T) {
	js := mirrortest.StreamJS(t)
	node := mirrortest.NewNode()
	cids := publishN(t, js, node, "r", 20)
	node.Hang[cids[12].String()] = true
	state := filepath.Join(t.TempDir(), "replay-c.seq")
	cfg := mirror.PinConfig{Concurrency: 3, MaxAttempts: 1, Backoff: mirror.Backoff{time.Millisecond}, PinTimeout: time.Minute}
	p := mirror.NewPinner(node, mirror.PinnerOptions{Mirror: "c", JS: js, PinTimeout: time.Minute, Announce: []string{"/dns4/c.example.org/tcp/4001"}})

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			done := 0
			for _, c := range cids {
				if node.Pinned(c.String()) {
					done++
				}
			}
			if done == len(cids)-1 {
				return
			}
		}
		t.Error("timed out waiting for every pin but the hanging one")
	}()
	sum, err := Replay(ctx, js, p, ReplayOptions{StateFile: state, Pin: cfg})
	if err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("interrupted replay: %v", err)
	}
	if sum.Total != 20 {
		t.Errorf("total %d, want 20", sum.Total)
	}
	mark, ok, err := ReadState(state)
	if !ok || err != nil {
		t.Fatalf("no state after interruption: %v", err)
	}
	// Events are stream sequences 1..20; the 13th hung, so 12 is the mark.
	if mark != 12 {
		t.Errorf("state %d after interruption, want 12", mark)
	}

	delete(node.Hang, cids[12].String())
	sum, err = Replay(context.Background(), js, p, ReplayOptions{StartSeq: mark + 1, StateFile: state, Pin: cfg})
	if err != nil {
		t.Fatalf("resumed replay: %v", err)
	}
	if sum.Total != 8 || sum.Tally.Done() != 8 {
		t.Errorf("resumed replay: %+v, want 8 events", sum)
	}
	for _, c := range cids {
		if !node.Pinned(c.String()) {
			t.Errorf("%s not pinned after resume", c)
		}
	}
	if mark, _, _ = ReadState(state); mark != 20 {
		t.Errorf("state %d at the end, want 20", mark)
	}
	seen := map[string]int{}
	for _, e := range pinnedEvents(t, js) {
		seen[e.CID]++
		if e.Mirror != "c" || e.Node.PeerID != node.Identity.PeerID || len(e.AnnounceAddrs) != 1 || e.AnnounceAddrs[0] != "/dns4/c.example.org/tcp/4001" {
			t.Errorf("pinned event %+v", e)
		}
	}
	for _, c := range cids {
		if seen[c.String()] != 1 {
			t.Errorf("%s announced %d times", c, seen[c.String()])
		}
	}
}

// TestReplayFailureHoldsState: a CID that cannot be fetched fails the run,
// the state stays before it, and the rest is still pinned.
func TestReplayFailureHoldsState(t *testing.T) {
	js := mirrortest.StreamJS(t)
	node := mirrortest.NewNode()
	cids := publishN(t, js, node, "f", 5)
	delete(node.Content, cids[1].String())
	state := filepath.Join(t.TempDir(), "s.seq")
	var lines bytes.Buffer
	progress, _ := NewProgress(ProgressLines, &lines, "replay c", time.Hour)
	p := mirror.NewPinner(node, mirror.PinnerOptions{Mirror: "c", JS: js, PinTimeout: 50 * time.Millisecond})
	sum, err := Replay(context.Background(), js, p, ReplayOptions{StateFile: state, Progress: progress,
		Pin: mirror.PinConfig{Concurrency: 2, MaxAttempts: 2, Backoff: mirror.Backoff{time.Millisecond}}})
	if err == nil || sum.Failed != 1 || sum.Pinned != 4 {
		t.Fatalf("replay with a missing CID: %+v, %v", sum, err)
	}
	if mark, _, _ := ReadState(state); mark != 1 {
		t.Errorf("state %d, want 1 (the failed event is seq 2)", mark)
	}
	if !strings.Contains(lines.String(), "5/5 (100%), 4 pinned, 0 already pinned, 1 failed") {
		t.Errorf("progress lines:\n%s", lines.String())
	}
}

// TestReplaySince: a replay from a time takes only the events stored since.
func TestReplaySince(t *testing.T) {
	js := mirrortest.StreamJS(t)
	node := mirrortest.NewNode()
	old := publishN(t, js, node, "old", 3)
	time.Sleep(50 * time.Millisecond)
	since := time.Now()
	recent := publishN(t, js, node, "new", 2)
	p := mirror.NewPinner(node, mirror.PinnerOptions{})
	sum, err := Replay(context.Background(), js, p, ReplayOptions{StartTime: since,
		Pin: mirror.PinConfig{Concurrency: 2, MaxAttempts: 1, Backoff: mirror.Backoff{time.Millisecond}}})
	if err != nil || sum.Total != 2 || sum.Pinned != 2 {
		t.Fatalf("replay since: %+v, %v", sum, err)
	}
	for _, c := range old {
		if node.Pinned(c.String()) {
			t.Errorf("%s, published before --since, was replayed", c)
		}
	}
	for _, c := range recent {
		if !node.Pinned(c.String()) {
			t.Errorf("%s not replayed", c)
		}
	}
}

// TestReplaySkipsRetired: replay does not pin a CID the stream retired
// after publishing it, but does pin one published again after that.
func TestReplaySkipsRetired(t *testing.T) {
	js := mirrortest.StreamJS(t)
	ctx := context.Background()
	node := mirrortest.NewNode()
	var cids []cid.Cid
	for _, n := range []string{"kept", "retired", "republished"} {
		d := []byte("nar of " + n)
		c := node.Add(d)
		cids = append(cids, c)
		if _, err := events.Publish(ctx, js, events.SubjectPublished, mirrortest.Published(n, c, d)); err != nil {
			t.Fatal(err)
		}
		if n != "kept" {
			if _, err := events.Publish(ctx, js, events.SubjectRetired, mirrortest.Retired(n, c, d)); err != nil {
				t.Fatal(err)
			}
		}
		if n == "republished" {
			mirrortest.PublishRaw(t, js, events.SubjectPublished, mirrortest.Published(n, c, d))
		}
	}
	p := mirror.NewPinner(node, mirror.PinnerOptions{PinTimeout: time.Minute})
	sum, err := Replay(ctx, js, p, ReplayOptions{Pin: mirror.PinConfig{Concurrency: 2, MaxAttempts: 1, Backoff: mirror.Backoff{time.Millisecond}, PinTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, false, true}
	for i, c := range cids {
		if node.Pinned(c.String()) != want[i] {
			t.Errorf("CID %d pinned %v, want %v", i, node.Pinned(c.String()), want[i])
		}
	}
	if sum.Skipped != 2 || sum.Pinned != 2 {
		t.Errorf("tally %+v: want 2 pinned (kept, republished) and 2 skipped (retired, republished's first publish)", sum.Tally)
	}
}

// TestReplayFillsCache: a new mirror replaying the stream becomes a
// complete cache: every signed path pinned has its narinfo, as the origin
// wrote it; an unsigned (v1-like) event is pinned and gets no narinfo; the
// last cache root announced is pinned.
func TestReplayFillsCache(t *testing.T) {
	js := mirrortest.StreamJS(t)
	node := mirrortest.NewNode()
	sk, _, _ := signature.GenerateKeypair("origin-1", nil)
	var want []*narinfo.NarInfo
	var unsigned *events.Published
	for i := 0; i < 6; i++ {
		data := []byte(fmt.Sprintf("nar %d", i))
		c := node.Add(data)
		ev := mirrortest.Published(fmt.Sprintf("fill-%d", i), c, data)
		if i != 3 {
			ni := &narinfo.NarInfo{StorePath: ev.StorePath, NarHash: ev.NarHash, NarSize: uint64(ev.NarSize)}
			if err := ni.Sign(sk); err != nil {
				t.Fatal(err)
			}
			ev.Sigs, ev.Deriver = ni.Sigs, "y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-fill.drv"
			events.Seal(ev)
			rebuilt, err := mirrorcache.NarInfo(ev)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, rebuilt)
		} else {
			unsigned = ev
		}
		if _, err := events.Publish(context.Background(), js, events.SubjectPublished, ev); err != nil {
			t.Fatal(err)
		}
	}
	// Two cache roots announced: replay pins the last.
	var roots []string
	for i := 0; i < 2; i++ {
		r := node.Add([]byte(fmt.Sprintf("cache root %d", i)))
		ev := &events.CacheRoot{Host: "a", StoreDir: "/nix/store", Root: r.String(), Publisher: events.Node{PeerID: "12D3KooWPublisher", Addrs: []string{}}}
		events.Seal(ev)
		if _, err := events.Publish(context.Background(), js, events.SubjectCacheRoot, ev); err != nil {
			t.Fatal(err)
		}
		roots = append(roots, r.String())
	}
	cache, err := mirrorcache.Open(t.TempDir(), "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	p := mirror.NewPinner(node, mirror.PinnerOptions{Cache: cache})
	sum, err := Replay(context.Background(), js, p, ReplayOptions{Pin: mirror.PinConfig{Concurrency: 2, MaxAttempts: 1, Backoff: mirror.Backoff{1}}})
	if err != nil || sum.Pinned != 6 {
		t.Fatalf("replay: %+v %v", sum, err)
	}
	for _, ni := range want {
		b, err := os.ReadFile(filepath.Join(cache.Dir(), storepath.HashPart(ni.StorePath)+".narinfo"))
		if err != nil || string(b) != ni.String() {
			t.Errorf("%s: narinfo %q (%v), want %q", ni.StorePath, b, err, ni.String())
		}
	}
	if node.Pinned(roots[0]) || !node.Pinned(roots[1]) {
		t.Errorf("cache roots pinned: first %v (want false), last %v (want true)", node.Pinned(roots[0]), node.Pinned(roots[1]))
	}
	if !node.Pinned(unsigned.CID) {
		t.Errorf("the unsigned event's CID is not pinned")
	}
	if _, err := os.Stat(filepath.Join(cache.Dir(), storepath.HashPart(unsigned.StorePath)+".narinfo")); err == nil {
		t.Errorf("a narinfo was kept for an unsigned event")
	}
}
