package replication

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"go.uber.org/goleak"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	top  = "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-top"
	mid  = "/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-mid"
	leaf = "/nix/store/2c9p07z77phvv2hf6gm9f28syp39f1ag-leaf"
)

// cidOf is a real CID (events are validated on publish), the same for the
// same name.
func cidOf(name string) string {
	h, _ := mh.Sum([]byte(name), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h).String()
}

// published is a valid published event, as the publisher sends it.
func published(sp, name string, size int64, refs ...string) *events.Published {
	hash := strings.Repeat("0", 52)
	e := &events.Published{Host: "a", StoreDir: "/nix/store", StorePath: sp, CID: cidOf(name), NarSize: size, References: append([]string{}, refs...),
		NarHash: "sha256:" + hash, CacheURL: "file:///cache", NarURL: "nar/" + hash + ".nar",
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "publisher", Addrs: []string{}}}
	e.Time = time.Unix(100, 0)
	return e
}

func pinned(mirror, node, name, sp string, at int64) *events.Pinned {
	e := &events.Pinned{Mirror: mirror, CID: cidOf(name), StorePath: sp, Node: events.Node{PeerID: node, Addrs: []string{}}}
	e.Time = time.Unix(at, 0)
	return e
}

func base(p string) string { return p[len("/nix/store/"):] }

// TestClosureReplication: a closure counts as replicated on K mirrors only
// once every path of it has K distinct nodes' pins; a node pinning under two
// names counts once; a reference never published keeps it unreplicated; a
// retired path loses its confirmations.
func TestClosureReplication(t *testing.T) {
	s := NewState()
	s.Apply(published(leaf, "cid-leaf", 10))
	s.Apply(published(mid, "cid-mid", 20, base(leaf), base(mid))) // self-reference
	s.Apply(published(top, "cid-top", 30, base(mid)))

	c := s.Check([]string{top}, 1)
	if c.Replicated || len(c.Paths) != 3 || len(c.Missing()) != 3 {
		t.Fatalf("nothing pinned yet: %+v", c)
	}
	for _, sp := range []string{top, mid, leaf} {
		cid := map[string]string{top: "cid-top", mid: "cid-mid", leaf: "cid-leaf"}[sp]
		s.Apply(pinned("a", "node-a", cid, sp, 200))
	}
	if c := s.Check([]string{top}, 1); !c.Replicated {
		t.Fatalf("all on a, K=1: %+v", c.Missing())
	}
	// The same node under a second name is still one copy.
	s.Apply(pinned("a2", "node-a", "cid-top", top, 201))
	c = s.Check([]string{top}, 2)
	if c.Replicated || len(c.Missing()) != 3 {
		t.Fatalf("K=2 with one node: %+v", c.Missing())
	}
	for _, sp := range []string{top, mid} {
		s.Apply(pinned("b", "node-b", map[string]string{top: "cid-top", mid: "cid-mid"}[sp], sp, 300))
	}
	c = s.Check([]string{top}, 2)
	if m := c.Missing(); c.Replicated || len(m) != 1 || m[0].StorePath != leaf || m[0].Why(2) != "1 mirror of 2" {
		t.Fatalf("leaf only on a: %+v", m)
	}
	s.Apply(pinned("b", "node-b", "cid-leaf", leaf, 301))
	if c := s.Check([]string{top}, 2); !c.Replicated {
		t.Fatalf("all on a and b: %+v", c.Missing())
	}
	var text bytes.Buffer
	s.Check([]string{top}, 2).WriteText(&text)
	if !strings.Contains(text.String(), "all 3 paths on at least 2 mirror(s)") || !strings.Contains(strings.Join(strings.Fields(text.String()), " "), mid+" a,b replicated") {
		t.Errorf("text:\n%s", text.String())
	}

	// A reference not published yet.
	other := "/nix/store/3c9p07z77phvv2hf6gm9f28syp39f1ag-other"
	s.Apply(published("/nix/store/4c9p07z77phvv2hf6gm9f28syp39f1ag-user", "cid-user", 5, base(other)))
	s.Apply(pinned("a", "node-a", "cid-user", "/nix/store/4c9p07z77phvv2hf6gm9f28syp39f1ag-user", 400))
	c = s.Check([]string{"/nix/store/4c9p07z77phvv2hf6gm9f28syp39f1ag-user"}, 1)
	if m := c.Missing(); c.Replicated || len(m) != 1 || m[0].StorePath != other || m[0].Why(1) != "not published" {
		t.Fatalf("unpublished reference: %+v", m)
	}

	// Retired: its pins go.
	r := &events.Retired{StorePath: leaf, CID: cidOf("cid-leaf")}
	s.Apply(r)
	c = s.Check([]string{top}, 1)
	if m := c.Missing(); len(m) != 1 || m[0].Why(1) != "retired" {
		t.Fatalf("retired leaf: %+v", m)
	}
	// Published again: pinned anew before it counts.
	s.Apply(published(leaf, "cid-leaf", 10))
	if c := s.Check([]string{top}, 1); c.Replicated {
		t.Fatal("republished leaf counted the pins from before its retirement")
	}
}

// TestMirrorsAndBuilds: each mirror's share of the live set, its last pin,
// and the latest builds with the mirrors that hold their whole closure.
func TestMirrorsAndBuilds(t *testing.T) {
	s := NewState()
	s.Apply(published(leaf, "cid-leaf", 10))
	s.Apply(published(top, "cid-top", 30, base(leaf)))
	s.Apply(published(mid, "cid-mid", 20))
	s.Apply(pinned("a", "node-a", "cid-leaf", leaf, 200))
	s.Apply(pinned("a", "node-a", "cid-top", top, 250))
	s.Apply(pinned("b", "node-b", "cid-leaf", leaf, 300))
	for i, outs := range [][]string{{mid}, {top}} {
		b := &events.Built{Host: "h", OutPaths: outs, Job: "j"}
		b.Time = time.Unix(int64(500+i), 0)
		s.Apply(b)
	}
	live := s.Live()
	if live.Paths != 3 || live.Bytes != 60 {
		t.Errorf("live %+v", live)
	}
	ms := s.Mirrors()
	if len(ms) != 2 || ms[0].Name != "a" || ms[0].Holds != 2 || ms[0].Live != 3 || !ms[0].LastPin.Equal(time.Unix(250, 0)) ||
		ms[1].Holds != 1 || ms[1].Pins != 1 {
		t.Errorf("mirrors %+v", ms)
	}
	bs := s.LatestBuilds(5)
	if len(bs) != 2 || bs[0].OutPaths[0] != top || strings.Join(bs[0].Mirrors, ",") != "a" || !bs[0].Published ||
		len(bs[1].Mirrors) != 0 || !bs[1].Published {
		t.Errorf("builds %+v", bs)
	}
}

// TestTrackerWait: against a real JetStream, Wait returns once the
// closure's pins arrive, and with ErrNotReplicated and what is missing
// when its context ends first; a pinned event on another mirror's subject
// is no confirmation.
func TestTrackerWait(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub := func(subject string, e events.Event) {
		t.Helper()
		events.Seal(e)
		if _, err := events.Publish(ctx, js, subject, e); err != nil {
			t.Fatal(err)
		}
	}
	pub(events.SubjectPublished, published(leaf, "cid-leaf", 10))
	pub(events.SubjectPublished, published(top, "cid-top", 30, base(leaf)))
	pub(events.SubjectPinned("a"), pinned("a", "node-a", "cid-top", top, 200))
	// A spoofed confirmation: mirror b's event on a's subject.
	pub(events.SubjectPinned("a"), pinned("b", "node-b", "cid-leaf", leaf, 200))

	tr := NewTracker(js, "", nil)
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	c, err := tr.Wait(wctx, []string{top}, 1, 20*time.Millisecond)
	cancel()
	if !errors.Is(err, ErrNotReplicated) || c == nil || len(c.Missing()) != 1 || c.Missing()[0].StorePath != leaf {
		t.Fatalf("wait before the leaf is pinned: %v, %+v", err, c)
	}

	done := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		c, err := tr.Wait(wctx, []string{top}, 1, 20*time.Millisecond)
		if err == nil && !c.Replicated {
			err = errors.New("returned unreplicated")
		}
		done <- err
	}()
	pub(events.SubjectPinned("a"), pinned("a", "node-a", "cid-leaf", leaf, 300))
	if err := <-done; err != nil {
		t.Fatalf("wait once pinned: %v", err)
	}
}
