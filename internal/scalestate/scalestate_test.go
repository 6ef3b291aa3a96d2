package scalestate

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// TestBuild: every path's CID is pinned recursively on the node, its
// narinfo is in the cache as a mirror would keep it, and its event is in
// the stream; the CID is the one synthcache writes as IPFSHash.
func TestBuild(t *testing.T) {
	testenv.NeedProgram(t, "ipfs")
	k := testenv.StartKubo(t, testenv.KuboOffline())
	nats := testenv.StartNATS(t)
	_, js := nats.Connect(t)
	ctx := context.Background()
	str, err := events.EnsureStream(ctx, js, events.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const n = 1200
	start := time.Now()
	st, err := Build(ctx, Options{Seed: "t", N: n, JS: js, Publisher: events.Node{PeerID: "12D3KooWPublisher", Addrs: []string{}},
		KuboRepo: k.Repo, CARBlocks: 500, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %d paths in %v: %+v", n, time.Since(start), st)
	if st.Events != n || st.Pins != n || st.NarInfos != n {
		t.Fatalf("stats %+v, want %d of each", st, n)
	}
	pins := map[string]bool{}
	for _, l := range strings.Fields(k.IPFS(t, "pin", "ls", "--type=recursive", "--quiet")) {
		pins[l] = true
	}
	cache, err := mirrorcache.Open(dir, storepath.DefaultStoreDir)
	if err != nil {
		t.Fatal(err)
	}
	sdir := t.TempDir()
	synthcache.Init(sdir)
	err = synthcache.Nixpkgs("t", n, func(i int, p synthcache.Path) error {
		want, err := synthcache.Write(sdir, p, time.Time{})
		if err != nil {
			return err
		}
		if !pins[want.IPFSHash] {
			t.Errorf("%s: %s not pinned", p.StorePath, want.IPFSHash)
		}
		got, err := cache.Get(storepath.HashPart(p.StorePath))
		if err != nil || got == nil {
			t.Errorf("%s: no narinfo in the mirror's cache (%v)", p.StorePath, err)
		} else if got.IPFSHash != want.IPFSHash || got.NarHash != want.NarHash {
			t.Errorf("%s: narinfo %s %s, want %s %s", p.StorePath, got.IPFSHash, got.NarHash, want.IPFSHash, want.NarHash)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("stream holds %d messages, want %d", info.State.Msgs, n)
	}
}
