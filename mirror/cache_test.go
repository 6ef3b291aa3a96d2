package mirror

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// TestRetireRemovesNarinfo: a retired path leaves the mirror's cache, also
// on a --keep-retired mirror, whose pin stays.
func TestRetireRemovesNarinfo(t *testing.T) {
	sk, _, _ := signature.GenerateKeypair("origin-1", nil)
	for _, keep := range []bool{false, true} {
		node := mirrortest.NewNode()
		cache, err := mirrorcache.Open(t.TempDir(), "/nix/store")
		if err != nil {
			t.Fatal(err)
		}
		w := NewWorker(NewPinner(node, PinnerOptions{Cache: cache}), WorkerOptions{Cache: cache, KeepRetired: keep})
		data := []byte("retired nar")
		c := node.Add(data)
		ev := mirrortest.Published("retiring", c, data)
		ni := &narinfo.NarInfo{StorePath: ev.StorePath, NarHash: ev.NarHash, NarSize: uint64(ev.NarSize)}
		if err := ni.Sign(sk); err != nil {
			t.Fatal(err)
		}
		ev.Sigs = ni.Sigs
		events.Seal(ev)
		it, err := FromPublished(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.pinner.Pin(context.Background(), it); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(cache.Dir(), storepath.HashPart(ev.StorePath)+".narinfo")
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("narinfo not kept: %v", err)
		}
		if err := w.retire(context.Background(), mirrortest.Retired("retiring", c, data), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(f); err == nil {
			t.Errorf("keep=%v: the retired path's narinfo is still in the mirror's cache", keep)
		}
		if node.Pinned(c.String()) != keep {
			t.Errorf("keep=%v: pinned %v", keep, node.Pinned(c.String()))
		}
	}
}

// TestPinRootFollowsLatest: each cacheroot event pins its root and lets
// the previous one go; an older event arriving late changes nothing.
func TestPinRootFollowsLatest(t *testing.T) {
	node := mirrortest.NewNode()
	w := NewWorker(NewPinner(node, PinnerOptions{}), WorkerOptions{})
	r1, r2 := node.Add([]byte("root one")), node.Add([]byte("root two"))
	ev := func(c string) *events.CacheRoot {
		e := &events.CacheRoot{Host: "a", StoreDir: "/nix/store", Root: c, Publisher: events.Node{Addrs: []string{}}}
		events.Seal(e)
		return e
	}
	ctx := context.Background()
	if err := w.pinRoot(ctx, ev(r1.String()), 5); err != nil {
		t.Fatal(err)
	}
	if err := w.pinRoot(ctx, ev(r2.String()), 9); err != nil {
		t.Fatal(err)
	}
	if err := w.pinRoot(ctx, ev(r1.String()), 7); err != nil {
		t.Fatal(err)
	}
	if node.Pinned(r1.String()) || !node.Pinned(r2.String()) {
		t.Errorf("pins: root 1 %v (want false), root 2 %v (want true)", node.Pinned(r1.String()), node.Pinned(r2.String()))
	}
}

// namedPins is a fake node that lists pins by name, as kubo does, and
// counts how often it is asked to.
type namedPins struct {
	*mirrortest.Node
	stale    cid.Cid // a root an earlier run pinned
	listings int
}

func (n *namedPins) PinsNamed(ctx context.Context, name string) ([]cid.Cid, error) {
	n.listings++
	var out []cid.Cid
	if n.stale.Defined() && n.Pinned(n.stale.String()) {
		out = append(out, n.stale)
	}
	return out, nil
}

var _ rootPins = (*namedPins)(nil)

// TestPinRootListsPinsOnce: the first cache root a mirror handles asks the
// node which roots an earlier run left pinned (and lets them go); later
// ones trust the root this run pinned, because listing a node's pins
// walks all of them, a million on a mirror of a year's cache.
func TestPinRootListsPinsOnce(t *testing.T) {
	node := &namedPins{Node: mirrortest.NewNode()}
	stale := node.Add([]byte("a root pinned by the last run"))
	ctx := context.Background()
	if err := node.Pin(ctx, stale, rootPinName); err != nil {
		t.Fatal(err)
	}
	node.stale = stale
	w := NewWorker(NewPinner(node, PinnerOptions{}), WorkerOptions{})
	ev := func(c string) *events.CacheRoot {
		e := &events.CacheRoot{Host: "a", StoreDir: "/nix/store", Root: c, Publisher: events.Node{Addrs: []string{}}}
		events.Seal(e)
		return e
	}
	var roots []cid.Cid
	for i := 0; i < 5; i++ {
		r := node.Add([]byte(fmt.Sprintf("root %d", i)))
		roots = append(roots, r)
		if err := w.pinRoot(ctx, ev(r.String()), uint64(10+i)); err != nil {
			t.Fatal(err)
		}
	}
	if node.listings != 1 {
		t.Errorf("the node's pins were listed %d times for 5 cache roots, want once", node.listings)
	}
	if node.Pinned(stale.String()) {
		t.Error("the root an earlier run pinned is still pinned")
	}
	for i, r := range roots {
		if want := i == len(roots)-1; node.Pinned(r.String()) != want {
			t.Errorf("root %d pinned %v, want %v", i, node.Pinned(r.String()), want)
		}
	}
}
