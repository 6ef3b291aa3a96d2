package mirror

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// TestReplayFillsCache: a new mirror replaying the stream becomes a
// complete cache: every signed path pinned has its narinfo, as the origin
// wrote it; an unsigned (v1-like) event is pinned and gets no narinfo; the
// last cache root announced is pinned.
func TestReplayFillsCache(t *testing.T) {
	js := streamJS(t)
	node := newFakeNode()
	sk, _, _ := signature.GenerateKeypair("origin-1", nil)
	var want []*narinfo.NarInfo
	var unsigned *events.Published
	for i := 0; i < 6; i++ {
		data := []byte(fmt.Sprintf("nar %d", i))
		c := node.add(data)
		ev := published(fmt.Sprintf("fill-%d", i), c, data)
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
		r := node.add([]byte(fmt.Sprintf("cache root %d", i)))
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
	p := NewPinner(node, PinnerOptions{Cache: cache})
	sum, err := Replay(context.Background(), js, p, ReplayOptions{Pin: PinConfig{Concurrency: 2, MaxAttempts: 1, Backoff: Backoff{1}}})
	if err != nil || sum.Pinned != 6 {
		t.Fatalf("replay: %+v %v", sum, err)
	}
	for _, ni := range want {
		b, err := os.ReadFile(filepath.Join(cache.Dir(), storepath.HashPart(ni.StorePath)+".narinfo"))
		if err != nil || string(b) != ni.String() {
			t.Errorf("%s: narinfo %q (%v), want %q", ni.StorePath, b, err, ni.String())
		}
	}
	if node.pinned(roots[0]) || !node.pinned(roots[1]) {
		t.Errorf("cache roots pinned: first %v (want false), last %v (want true)", node.pinned(roots[0]), node.pinned(roots[1]))
	}
	if !node.pinned(unsigned.CID) {
		t.Errorf("the unsigned event's CID is not pinned")
	}
	if _, err := os.Stat(filepath.Join(cache.Dir(), storepath.HashPart(unsigned.StorePath)+".narinfo")); err == nil {
		t.Errorf("a narinfo was kept for an unsigned event")
	}
}

// TestRetireRemovesNarinfo: a retired path leaves the mirror's cache, also
// on a --keep-retired mirror, whose pin stays.
func TestRetireRemovesNarinfo(t *testing.T) {
	sk, _, _ := signature.GenerateKeypair("origin-1", nil)
	for _, keep := range []bool{false, true} {
		node := newFakeNode()
		cache, err := mirrorcache.Open(t.TempDir(), "/nix/store")
		if err != nil {
			t.Fatal(err)
		}
		w := &Worker{Pinner: NewPinner(node, PinnerOptions{Cache: cache}), Cache: cache, KeepRetired: keep, order: newCIDOrder()}
		data := []byte("retired nar")
		c := node.add(data)
		ev := published("retiring", c, data)
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
		if _, err := w.Pinner.Pin(context.Background(), it); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(cache.Dir(), storepath.HashPart(ev.StorePath)+".narinfo")
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("narinfo not kept: %v", err)
		}
		if err := w.Retire(context.Background(), retiredEv("retiring", c, data), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(f); err == nil {
			t.Errorf("keep=%v: the retired path's narinfo is still in the mirror's cache", keep)
		}
		if node.pinned(c.String()) != keep {
			t.Errorf("keep=%v: pinned %v", keep, node.pinned(c.String()))
		}
	}
}

// TestPinRootFollowsLatest: each cacheroot event pins its root and lets
// the previous one go; an older event arriving late changes nothing.
func TestPinRootFollowsLatest(t *testing.T) {
	node := newFakeNode()
	w := &Worker{Pinner: NewPinner(node, PinnerOptions{}), order: newCIDOrder()}
	r1, r2 := node.add([]byte("root one")), node.add([]byte("root two"))
	ev := func(c string) *events.CacheRoot {
		e := &events.CacheRoot{Host: "a", StoreDir: "/nix/store", Root: c, Publisher: events.Node{Addrs: []string{}}}
		events.Seal(e)
		return e
	}
	ctx := context.Background()
	if err := w.PinRoot(ctx, ev(r1.String()), 5); err != nil {
		t.Fatal(err)
	}
	if err := w.PinRoot(ctx, ev(r2.String()), 9); err != nil {
		t.Fatal(err)
	}
	if err := w.PinRoot(ctx, ev(r1.String()), 7); err != nil {
		t.Fatal(err)
	}
	if node.pinned(r1.String()) || !node.pinned(r2.String()) {
		t.Errorf("pins: root 1 %v (want false), root 2 %v (want true)", node.pinned(r1.String()), node.pinned(r2.String()))
	}
}
