package publisher

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"go.uber.org/zap/zaptest"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
	"github.com/nix-ipfs/nix-ipfs/schemas"
)

// TestFollowMirrorsKeepsTheList: the list names each mirror from its
// latest pinned event, ignores what is not a mirror's pinned event, and
// follows a mirror that starts announcing addresses.
func TestFollowMirrorsKeepsTheList(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	const peerB = "12D3KooWCMpDvrSw6GVYQ85Pk12ztqRM247pZddW6c8VQz36xAff"
	const peerC = "12D3KooWJyLvsygSJX92sA6Jiu6vgH3ddDPvCi73KDnNkh5yc6Rf"
	pin := func(subject, mirror, peer, cid string, announce ...string) {
		t.Helper()
		p := &events.Pinned{Mirror: mirror, CID: cid, StorePath: "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x",
			Node: events.Node{PeerID: peer, Addrs: []string{"/ip4/10.0.0.2/tcp/4001"}}, AnnounceAddrs: announce}
		events.Seal(p)
		if _, err := events.Publish(ctx, js, subject, p); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(s string) string {
		h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
		return cid.NewCidV1(cid.Raw, h).String()
	}
	cid1, cid2 := mk("one"), mk("two")
	pin(events.SubjectPinned("b"), "b", peerB, cid1)
	pin(events.SubjectPinned("b"), "b", peerB, cid2) // the latest of b
	pin(events.SubjectPinned("c"), "c", peerC, cid1, "/dns4/c.example.org/tcp/4001")
	pin(events.SubjectPinned("x"), "c", peerB, cid2) // c's event on x's subject: ignored

	cache := Cache{Dir: t.TempDir(), StoreDir: "/nix/store"}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); FollowMirrors(fctx, js, events.DefaultStream, cache, zaptest.NewLogger(t)) }()
	defer func() { cancel(); <-done }()

	read := func(want func(*mirrorlist.List) bool) *mirrorlist.List {
		t.Helper()
		var l *mirrorlist.List
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			data, err := os.ReadFile(cache.MirrorListPath())
			if err != nil {
				continue
			}
			if err := schemas.Validate(mirrorlist.Type, data); err != nil {
				t.Fatalf("written list does not match its schema: %v", err)
			}
			if l, err = mirrorlist.Parse(data); err != nil {
				t.Fatal(err)
			}
			if want(l) {
				return l
			}
		}
		t.Fatalf("list never as expected; last %+v", l)
		return nil
	}
	l := read(func(l *mirrorlist.List) bool { return len(l.Mirrors) == 2 })
	byName := map[string]mirrorlist.Mirror{}
	for _, m := range l.Mirrors {
		byName[m.Name] = m
	}
	if b := byName["b"]; b.PeerID != peerB || b.Announced || len(b.Addrs) != 1 || b.Addrs[0] != "/ip4/10.0.0.2/tcp/4001" {
		t.Errorf("b: %+v (no announced addresses: the node's)", b)
	}
	if c := byName["c"]; c.PeerID != peerC || !c.Announced || c.Addrs[0] != "/dns4/c.example.org/tcp/4001" {
		t.Errorf("c: %+v", c)
	}

	// A new pin (a repeat of one would be the same event, dropped by the
	// stream's duplicate window) from b, now announcing an address.
	pin(events.SubjectPinned("b"), "b", peerB, mk("three"), "/dns4/b.example.org/tcp/4001")
	read(func(l *mirrorlist.List) bool {
		for _, m := range l.Mirrors {
			if m.Name == "b" && m.Announced && m.Addrs[0] == "/dns4/b.example.org/tcp/4001" {
				return true
			}
		}
		return false
	})
}
