package unixfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs/unixfstest"
)

// TestConformanceFakeGateway: the trustless gateway client against the
// httptest fixture.
func TestConformanceFakeGateway(t *testing.T) {
	unixfstest.Run(t, func(t *testing.T) *unixfstest.Store {
		fg := unixfstest.NewFakeGateway(t)
		g, err := unixfs.NewGateway(fg.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &unixfstest.Store{
			Source: g,
			Add: func(t testing.TB, data []byte, l unixfstest.Layout) cid.Cid {
				links := l.MaxLinks
				if links == 0 {
					links = 174
				}
				return fg.Add(t, data, l.Chunk, links, l.RawLeaves, l.CIDv1, l.Trickle)
			},
			Remove: func(t testing.TB, c cid.Cid) func() {
				n, err := fg.DAG.Get(context.Background(), c)
				if err != nil {
					t.Fatal(err)
				}
				if err := fg.DAG.Remove(context.Background(), c); err != nil {
					t.Fatal(err)
				}
				return func() { fg.DAG.Add(context.Background(), n) }
			},
			Damage: func(t testing.TB, c cid.Cid) func() {
				fg.Mu.Lock()
				fg.Corrupt[c] = true
				fg.Mu.Unlock()
				return func() {
					fg.Mu.Lock()
					delete(fg.Corrupt, c)
					fg.Mu.Unlock()
				}
			},
		}
	})
}

// TestConformanceKubo: kubo's flatfs store read straight, kubo's RPC, a
// kubo daemon's Reader (its gateway streaming), and the trustless gateway
// client against kubo's gateway, all on one real daemon. Blocks are lost
// and damaged under the daemon, in its flatfs store, as a disk fault or a
// repo GC would do.
func TestConformanceKubo(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	store := func(src unixfs.Source) func(t *testing.T) *unixfstest.Store {
		return func(t *testing.T) *unixfstest.Store { return kuboStore(k, src) }
	}
	t.Run("flatfs", func(t *testing.T) {
		fs, err := unixfs.OpenFlatFS(k.Repo)
		if err != nil {
			t.Fatal(err)
		}
		unixfstest.Run(t, store(fs))
	})
	t.Run("rpc", func(t *testing.T) { unixfstest.Run(t, store(k.Client)) })
	t.Run("reader", func(t *testing.T) {
		r, err := ipfs.NewReader(k.Client, k.Gateway, nil)
		if err != nil {
			t.Fatal(err)
		}
		if gw, why := r.Discover(t.Context()); gw == "" {
			t.Fatalf("no gateway: %s", why)
		}
		unixfstest.Run(t, store(r))
	})
	t.Run("trustless gateway", func(t *testing.T) {
		g, err := unixfs.NewGateway(k.Gateway, nil)
		if err != nil {
			t.Fatal(err)
		}
		unixfstest.Run(t, store(g))
	})
}

func kuboStore(k *testenv.Kubo, src unixfs.Source) *unixfstest.Store {
	return &unixfstest.Store{
		Source: src,
		Add: func(t testing.TB, data []byte, l unixfstest.Layout) cid.Cid {
			if l.Trickle {
				t.Skip("ipfs.Params have no trickle layout")
			}
			p := ipfs.Params{Chunker: fmt.Sprintf("size-%d", l.Chunk), RawLeaves: l.RawLeaves, HashFunction: "sha2-256", MaxFileLinks: l.MaxLinks}
			if l.CIDv1 {
				p.CIDVersion = 1
			}
			c, err := k.Client.Add(context.Background(), bytes.NewReader(data), p, false)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		Remove: func(t testing.TB, c cid.Cid) func() {
			return editBlock(t, k.Repo, c, nil)
		},
		Damage: func(t testing.TB, c cid.Cid) func() {
			return editBlock(t, k.Repo, c, func(b []byte) []byte {
				b = bytes.Clone(b)
				b[len(b)-3] ^= 1
				return b
			})
		},
	}
}

// editBlock replaces c's block file in the flatfs store of repo with
// edit's bytes (nil edit: removes it), and returns what restores it.
func editBlock(t testing.TB, repo string, c cid.Cid, edit func([]byte) []byte) func() {
	p := blockFile(repo, c)
	saved, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("the block is not where flatfs keeps it: %v", err)
	}
	if edit == nil {
		err = os.Remove(p)
	} else {
		err = os.WriteFile(p, edit(saved), 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	return func() { os.WriteFile(p, saved, 0o644) }
}
