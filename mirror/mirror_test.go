package mirror

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

func TestPinIsIdempotentAndAnnouncesNothingWithoutJS(t *testing.T) {
	node := newFakeNode()
	data := []byte("nar bytes")
	c := node.add(data)
	it, err := FromPublished(published("a", c, data))
	if err != nil {
		t.Fatal(err)
	}
	p := NewPinner(node, PinnerOptions{Verify: true, PinTimeout: time.Second})
	r, err := p.Pin(context.Background(), it)
	if err != nil || !r.Fresh || !r.Verified || r.Event != nil {
		t.Fatalf("first pin: %+v, %v", r, err)
	}
	r, err = p.Pin(context.Background(), it)
	if err != nil || r.Fresh || !r.Verified {
		t.Fatalf("second pin: %+v, %v", r, err)
	}
	if node.pinCalls != 1 {
		t.Errorf("%d pin calls, want 1: an already pinned CID is not pinned again", node.pinCalls)
	}
	if node.connects != 1 {
		t.Errorf("%d connects, want 1", node.connects)
	}
}

func TestPinConnectFailureIsNotFatal(t *testing.T) {
	node := newFakeNode()
	node.connErr = errs.Errorf(errs.Transient, "no route")
	data := []byte("x")
	c := node.add(data)
	it, _ := FromPublished(published("a", c, data))
	if _, err := NewPinner(node, PinnerOptions{}).Pin(context.Background(), it); err != nil {
		t.Fatalf("pin with an unreachable publisher: %v", err)
	}
}

// A CID nobody has runs into the pin timeout, and that must not be
// Transient, or the mirror would retry it for ever.
func TestPinTimeoutIsNotTransient(t *testing.T) {
	node := newFakeNode()
	data := []byte("nobody has this")
	h, _ := cid.Decode(node.add(data).String())
	delete(node.content, h.String())
	it, _ := FromPublished(published("gone", h, data))
	_, err := NewPinner(node, PinnerOptions{PinTimeout: 50 * time.Millisecond}).Pin(context.Background(), it)
	if err == nil {
		t.Fatal("pin of a missing CID succeeded")
	}
	if k := errs.KindOf(err); k != errs.NotYet {
		t.Errorf("timeout has kind %v, want not_yet: %v", k, err)
	}
	if !strings.Contains(err.Error(), "pin timeout") {
		t.Errorf("error does not say why: %v", err)
	}
}

func TestPinUnreachableKuboIsTransient(t *testing.T) {
	node := newFakeNode()
	node.down = true
	data := []byte("y")
	it, _ := FromPublished(published("a", node.add(data), data))
	_, err := NewPinner(node, PinnerOptions{}).Pin(context.Background(), it)
	if !errs.Is(err, errs.Transient) {
		t.Errorf("kubo down: %v (kind %v), want transient", err, errs.KindOf(err))
	}
}

func TestVerifyMismatchIsCorruptAndUnpins(t *testing.T) {
	node := newFakeNode()
	data := []byte("the real bytes")
	c := node.add(data)
	ev := published("a", c, []byte("what was signed"))
	it, _ := FromPublished(ev)
	_, err := NewPinner(node, PinnerOptions{Verify: true}).Pin(context.Background(), it)
	if !errs.Is(err, errs.Corrupt) {
		t.Fatalf("mismatch: %v (kind %v), want corrupt", err, errs.KindOf(err))
	}
	if node.pinned(c.String()) || len(node.unpins) != 1 {
		t.Errorf("corrupt CID still pinned (unpins %v)", node.unpins)
	}
	// Same hash, wrong size.
	it.NarHash = nixHash(data)
	it.NarSize = int64(len(data)) - 1
	if _, err := NewPinner(node, PinnerOptions{Verify: true}).Pin(context.Background(), it); !errs.Is(err, errs.Corrupt) {
		t.Errorf("size mismatch: %v", err)
	}
}

func TestConfirmationsCountDistinctNodesNotSelf(t *testing.T) {
	pin := func(mirror, c, peer string, verified bool) *events.Pinned {
		return &events.Pinned{Mirror: mirror, CID: c, Node: events.Node{PeerID: peer}, Verified: verified}
	}
	node := newFakeNode()
	c1, c2, c3, c4 := node.add([]byte("1")), node.add([]byte("2")), node.add([]byte("3")), node.add([]byte("4"))
	evs := []*events.Pinned{
		pin("b", c1.String(), "peerB", true),
		pin("c", c1.String(), "peerC", false),
		pin("b", c1.String(), "peerB", true),     // a repeat
		pin("b2", c2.String(), "peerB", true),    // two names, one node
		pin("b", c2.String(), "peerB", true),     //
		pin("self", c3.String(), "peerA", true),  // A's own node is no copy elsewhere
		pin("b", "bafyunrelated", "peerB", true), // a CID A does not have
	}
	cf := CountConfirmations(evs, "peerA", false)
	if got := len(cf[c1.String()]); got != 2 {
		t.Errorf("c1: %d nodes, want 2", got)
	}
	if got := len(cf[c2.String()]); got != 1 {
		t.Errorf("c2: %d nodes, want 1 (one node under two names)", got)
	}
	if got := len(cf[c3.String()]); got != 0 {
		t.Errorf("c3: %d nodes, want 0 (self)", got)
	}
	if got := cf.Mirrors(c1.String()); !reflect.DeepEqual(got, []string{"b", "c"}) {
		t.Errorf("mirrors of c1 = %v", got)
	}

	pins := []cid.Cid{c1, c2, c3, c4}
	for _, tc := range []struct {
		min  int
		want []cid.Cid
	}{
		{1, []cid.Cid{c1, c2}},
		{2, []cid.Cid{c1}},
		{3, nil},
		{0, nil}, // never everything
	} {
		unpin, kept := Plan(pins, cf, tc.min)
		if !sameCIDs(unpin, tc.want) || kept != len(pins)-len(tc.want) {
			t.Errorf("min %d: unpin %v (kept %d), want %v", tc.min, unpin, kept, tc.want)
		}
	}
	verified := CountConfirmations(evs, "peerA", true)
	if unpin, _ := Plan(pins, verified, 2); len(unpin) != 0 {
		t.Errorf("require-verified, min 2: unpin %v; c's pin was not verified", unpin)
	}
}

func sameCIDs(a, b []cid.Cid) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, c := range a {
		m[c.String()] = true
	}
	for _, c := range b {
		if !m[c.String()] {
			return false
		}
	}
	return true
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "sub", "replay-b.seq")
	if _, ok, err := ReadState(f); ok || err != nil {
		t.Fatalf("missing file: ok=%v err=%v", ok, err)
	}
	for _, seq := range []uint64{7, 123456789} {
		if err := WriteState(f, seq); err != nil {
			t.Fatal(err)
		}
		got, ok, err := ReadState(f)
		if !ok || err != nil || got != seq {
			t.Fatalf("read back %d, %v, %v; want %d", got, ok, err, seq)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(f))
	if len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want only the state file", len(ents))
	}
	os.WriteFile(f, []byte("garbage\n"), 0o644)
	if _, _, err := ReadState(f); err == nil || !strings.Contains(err.Error(), f) {
		t.Errorf("garbage state: %v", err)
	}
}

func TestDefaultStateFile(t *testing.T) {
	env := map[string]string{"XDG_STATE_HOME": "/x/state", "HOME": "/home/u"}
	get := func(k string) string { return env[k] }
	if f, _ := DefaultStateFile(get, "b"); f != "/x/state/nix-ipfs/replay-b.seq" {
		t.Errorf("with XDG_STATE_HOME: %s", f)
	}
	delete(env, "XDG_STATE_HOME")
	if f, _ := DefaultStateFile(get, "b"); f != "/home/u/.local/state/nix-ipfs/replay-b.seq" {
		t.Errorf("without: %s", f)
	}
}

func TestWatermarkHoldsAtFailures(t *testing.T) {
	w := newWatermark(10)
	for _, s := range []uint64{11, 13, 14, 20} {
		w.add(s)
	}
	if m, moved := w.done(13); moved || m != 10 {
		t.Errorf("13 done before 11: mark %d moved %v", m, moved)
	}
	if m, _ := w.done(11); m != 13 {
		t.Errorf("after 11: mark %d, want 13", m)
	}
	// 14 fails (never done): 20 finishing does not move the mark past it.
	if m, _ := w.done(20); m != 13 {
		t.Errorf("after 20 with 14 failed: mark %d, want 13", m)
	}
}

func TestLineProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newLineProgress(&buf, "replay b", 10*time.Second)
	p.now = func() time.Time { return now }
	p.Start(4)
	now = now.Add(time.Second)
	p.Step(OutPinned) // within the interval: no line
	now = now.Add(10 * time.Second)
	p.Step(OutAlready)
	now = now.Add(time.Second)
	p.Step(OutFailed)
	p.Step(OutPinned)
	p.Finish()
	want := "replay b: 4 to do\n" +
		"replay b: 2/4 (50%), 1 pinned, 1 already pinned, 0 failed; 0.2/s, ETA 11s\n" +
		"replay b: 4/4 (100%), 2 pinned, 1 already pinned, 1 failed; 0.3/s in 12s\n"
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestBarProgress(t *testing.T) {
	var buf bytes.Buffer
	p, err := NewProgress(ProgressBar, &buf, "replay b", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(3)
	for i := 0; i < 3; i++ {
		p.Step(OutPinned)
	}
	p.Finish()
	out := buf.String()
	for _, want := range []string{"replay b", "3/3", "100%", "paths/s", "3 pinned"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q:\n%q", want, out)
		}
	}
	// Not a terminal: auto means lines.
	p, _ = NewProgress(ProgressAuto, &buf, "x", time.Hour)
	if _, ok := p.(*lineProgress); !ok {
		t.Errorf("auto on a buffer gave %T", p)
	}
	if _, err := NewProgress("fancy", &buf, "x", 0); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2025-01-31T10:00:00Z": time.Date(2025, 1, 31, 10, 0, 0, 0, time.UTC),
		"2025-01-31":           time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
		"36h":                  now.Add(-36 * time.Hour),
	} {
		got, err := ParseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseSince("yesterday", now); err == nil {
		t.Error("yesterday accepted")
	}
}

func TestBackoffFlag(t *testing.T) {
	var b Backoff
	if err := b.Set("1s, 500ms,2m"); err != nil {
		t.Fatal(err)
	}
	if b.String() != "1s,500ms,2m0s" {
		t.Errorf("String() = %q", b.String())
	}
	for _, bad := range []string{"", "1s,x", "-1s", "0s"} {
		if err := b.Set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReadPaths(t *testing.T) {
	p1, p2 := storePath("hello-2.12"), storePath("glibc-2.40")
	in := fmt.Sprintf("# closure\n%s\n\n%s\n%s\n%s\n", p1, filepath.Base(p2), p1, filepath.Base(p2)[:32])
	got, err := ReadPaths(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Base(p1)[:32], filepath.Base(p2)[:32]}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := ReadPaths(strings.NewReader("/etc/passwd\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("non-store path: %v", err)
	}
}

func TestParsePeers(t *testing.T) {
	got, err := ParsePeers("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA, /p2p/12D3KooWB")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].PeerID != "12D3KooWA" || got[0].Addrs[0] != "/ip4/127.0.0.1/tcp/4001" || got[1].Addrs != nil {
		t.Errorf("got %+v", got)
	}
	for _, bad := range []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/300.0.0.1/p2p/x", "/p2p/"} {
		if _, err := ParsePeers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"b", "mirror_2", "eu-west-1"} {
		if err := ValidateName("--name", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "x>", strings.Repeat("a", 65)} {
		if err := ValidateName("--name", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateAnnounce(t *testing.T) {
	if err := ValidateAnnounce([]string{"/dns4/b.example.org/tcp/4001", "/ip6/2a01:4f8::1/udp/4001/quic-v1"}); err != nil {
		t.Error(err)
	}
	for _, bad := range [][]string{{"b.example.org:4001"}, {"/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWCMpDvrSw6GVYQ85Pk12ztqRM247pZddW6c8VQz36xAff"}} {
		if err := ValidateAnnounce(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
