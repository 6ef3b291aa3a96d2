package gc

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
)

func TestConfirmationsCountDistinctNodesNotSelf(t *testing.T) {
	pin := func(mirror, c, peer string, verified bool) *events.Pinned {
		return &events.Pinned{Mirror: mirror, CID: c, Node: events.Node{PeerID: peer}, Verified: verified}
	}
	node := mirrortest.NewNode()
	c1, c2, c3, c4 := node.Add([]byte("1")), node.Add([]byte("2")), node.Add([]byte("3")), node.Add([]byte("4"))
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

func TestGCUnpinsOnlyConfirmed(t *testing.T) {
	js := mirrortest.StreamJS(t)
	a := mirrortest.NewNode()
	a.Identity.PeerID = "peerA"
	var all []cid.Cid
	for i := 0; i < 4; i++ {
		c := a.Add([]byte{byte(i)})
		a.PinSet[c.String()] = true
		all = append(all, c)
	}
	confirm := func(mirror, peer string, c cid.Cid) {
		ev := &events.Pinned{Mirror: mirror, CID: c.String(), StorePath: mirrortest.StorePath(fmt.Sprint("p", c.String()[len(c.String())-6:])),
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
	sum, err := Collect(context.Background(), js, a, Options{MinMirrors: 1, DryRun: true}, &out)
	if err != nil || sum.Confirmed != 2 || len(a.Unpins) != 0 || a.GCRuns != 0 {
		t.Fatalf("dry run: %+v, %v, unpins %v, gc %d", sum, err, a.Unpins, a.GCRuns)
	}
	if n := strings.Count(out.String(), "would unpin "); n != 2 {
		t.Errorf("dry run listed %d CIDs:\n%s", n, out.String())
	}

	out.Reset()
	if sum, err = Collect(context.Background(), js, a, Options{MinMirrors: 2}, &out); err != nil || sum.Unpinned != 1 {
		t.Fatalf("min 2: %+v, %v", sum, err)
	}
	if a.Pinned(all[0].String()) || !a.Pinned(all[1].String()) || a.GCRuns != 1 {
		t.Errorf("min 2: pins %v, gc runs %d", a.PinSet, a.GCRuns)
	}
	if sum, err = Collect(context.Background(), js, a, Options{MinMirrors: 1}, &out); err != nil || sum.Unpinned != 1 {
		t.Fatalf("min 1: %+v, %v", sum, err)
	}
	if a.Pinned(all[1].String()) || !a.Pinned(all[2].String()) || !a.Pinned(all[3].String()) {
		t.Errorf("min 1: pins %v; the unconfirmed and self-confirmed must stay", a.PinSet)
	}
	if _, err := Collect(context.Background(), js, a, Options{MinMirrors: 0}, &out); err == nil {
		t.Error("min 0 accepted")
	}
}
