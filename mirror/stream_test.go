package mirror

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

func streamJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	if _, err := events.EnsureStream(context.Background(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return js
}

// publishN puts n "published" events on the stream, each for content the
// node can fetch, and returns their CIDs in order.
func publishN(t *testing.T, js jetstream.JetStream, node *fakeNode, prefix string, n int) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	for i := 0; i < n; i++ {
		data := []byte(fmt.Sprintf("%s-%d", prefix, i))
		c := node.add(data)
		if _, err := events.Publish(context.Background(), js, events.SubjectPublished, published(fmt.Sprintf("%s-%d", prefix, i), c, data)); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func pinnedEvents(t *testing.T, js jetstream.JetStream) []*events.Pinned {
	t.Helper()
	got, err := ReadPinned(context.Background(), js, events.DefaultStream, nil)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestReplayInterruptedThenResumed: a replay stopped while one CID hangs
// records how far everything is done, and --resume's start pins the rest,
// announcing each CID once.
func TestReplayInterruptedThenResumed(t *testing.T) {
	js := streamJS(t)
	node := newFakeNode()
	cids := publishN(t, js, node, "r", 20)
	node.hang[cids[12].String()] = true
	state := filepath.Join(t.TempDir(), "replay-c.seq")
	cfg := PinConfig{Concurrency: 3, MaxAttempts: 1, Backoff: Backoff{time.Millisecond}, PinTimeout: time.Minute}
	p := NewPinner(node, PinnerOptions{Mirror: "c", JS: js, PinTimeout: time.Minute, Announce: []string{"/dns4/c.example.org/tcp/4001"}})

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			done := 0
			for _, c := range cids {
				if node.pinned(c.String()) {
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

	delete(node.hang, cids[12].String())
	sum, err = Replay(context.Background(), js, p, ReplayOptions{StartSeq: mark + 1, StateFile: state, Pin: cfg})
	if err != nil {
		t.Fatalf("resumed replay: %v", err)
	}
	if sum.Total != 8 || sum.Tally.Done() != 8 {
		t.Errorf("resumed replay: %+v, want 8 events", sum)
	}
	for _, c := range cids {
		if !node.pinned(c.String()) {
			t.Errorf("%s not pinned after resume", c)
		}
	}
	if mark, _, _ = ReadState(state); mark != 20 {
		t.Errorf("state %d at the end, want 20", mark)
	}
	seen := map[string]int{}
	for _, e := range pinnedEvents(t, js) {
		seen[e.CID]++
		if e.Mirror != "c" || e.Node.PeerID != node.self.PeerID || len(e.AnnounceAddrs) != 1 || e.AnnounceAddrs[0] != "/dns4/c.example.org/tcp/4001" {
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
	js := streamJS(t)
	node := newFakeNode()
	cids := publishN(t, js, node, "f", 5)
	delete(node.content, cids[1].String())
	state := filepath.Join(t.TempDir(), "s.seq")
	var lines bytes.Buffer
	progress, _ := NewProgress(ProgressLines, &lines, "replay c", time.Hour)
	p := NewPinner(node, PinnerOptions{Mirror: "c", JS: js, PinTimeout: 50 * time.Millisecond})
	sum, err := Replay(context.Background(), js, p, ReplayOptions{StateFile: state, Progress: progress,
		Pin: PinConfig{Concurrency: 2, MaxAttempts: 2, Backoff: Backoff{time.Millisecond}}})
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

func TestGCUnpinsOnlyConfirmed(t *testing.T) {
	js := streamJS(t)
	a := newFakeNode()
	a.self.PeerID = "peerA"
	var all []cid.Cid
	for i := 0; i < 4; i++ {
		c := a.add([]byte{byte(i)})
		a.pins[c.String()] = true
		all = append(all, c)
	}
	confirm := func(mirror, peer string, c cid.Cid) {
		ev := &events.Pinned{Mirror: mirror, CID: c.String(), StorePath: storePath(fmt.Sprint("p", c.String()[len(c.String())-6:])),
			Node: events.Node{PeerID: peer, Addrs: []string{}}}
		events.Seal(ev)
		if _, err := events.Publish(context.Background(), js, events.SubjectPinned(mirror), ev); err != nil {
			t.Fatal(err)
		}
	}
	confirm("b", "peerB", all[0])
	confirm("c", "peerC", all[0])
	confirm("b", "peerB", all[1])
	confirm("self", "peerA", all[2]) // a mirror on A's own node is no copy

	var out bytes.Buffer
	sum, err := GC(context.Background(), js, a, GCOptions{MinMirrors: 1, DryRun: true}, &out)
	if err != nil || sum.Confirmed != 2 || len(a.unpins) != 0 || a.gcRuns != 0 {
		t.Fatalf("dry run: %+v, %v, unpins %v, gc %d", sum, err, a.unpins, a.gcRuns)
	}
	if n := strings.Count(out.String(), "would unpin "); n != 2 {
		t.Errorf("dry run listed %d CIDs:\n%s", n, out.String())
	}

	out.Reset()
	if sum, err = GC(context.Background(), js, a, GCOptions{MinMirrors: 2}, &out); err != nil || sum.Unpinned != 1 {
		t.Fatalf("min 2: %+v, %v", sum, err)
	}
	if a.pinned(all[0].String()) || !a.pinned(all[1].String()) || a.gcRuns != 1 {
		t.Errorf("min 2: pins %v, gc runs %d", a.pins, a.gcRuns)
	}
	if sum, err = GC(context.Background(), js, a, GCOptions{MinMirrors: 1}, &out); err != nil || sum.Unpinned != 1 {
		t.Fatalf("min 1: %+v, %v", sum, err)
	}
	if a.pinned(all[1].String()) || !a.pinned(all[2].String()) || !a.pinned(all[3].String()) {
		t.Errorf("min 1: pins %v; the unconfirmed and self-confirmed must stay", a.pins)
	}
	if _, err := GC(context.Background(), js, a, GCOptions{MinMirrors: 0}, &out); err == nil {
		t.Error("min 0 accepted")
	}
}

// TestReplaySince: a replay from a time takes only the events stored since.
func TestReplaySince(t *testing.T) {
	js := streamJS(t)
	node := newFakeNode()
	old := publishN(t, js, node, "old", 3)
	time.Sleep(50 * time.Millisecond)
	since := time.Now()
	recent := publishN(t, js, node, "new", 2)
	p := NewPinner(node, PinnerOptions{})
	sum, err := Replay(context.Background(), js, p, ReplayOptions{StartTime: since,
		Pin: PinConfig{Concurrency: 2, MaxAttempts: 1, Backoff: Backoff{time.Millisecond}}})
	if err != nil || sum.Total != 2 || sum.Pinned != 2 {
		t.Fatalf("replay since: %+v, %v", sum, err)
	}
	for _, c := range old {
		if node.pinned(c.String()) {
			t.Errorf("%s, published before --since, was replayed", c)
		}
	}
	for _, c := range recent {
		if !node.pinned(c.String()) {
			t.Errorf("%s not replayed", c)
		}
	}
}
