// Package unixfstest is the conformance suite every unixfs.Source passes
// (perkeep's pkg/blobserver/storagetest is the model): a source's test
// calls Run with a way to make the source and to put files in it, and the
// real sources run it against the real thing (kubo's flatfs store and RPC,
// kubo's gateway, and the FakeGateway fixture for the trustless gateway).
package unixfstest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// Layout is how a file is cut into a DAG.
type Layout struct {
	Chunk     int64 // bytes per leaf
	MaxLinks  int   // links per node (0: 174)
	RawLeaves bool
	CIDv1     bool
	Trickle   bool
}

// Store is a source under test and the ways to put files in its store.
type Store struct {
	Source unixfs.Source
	// Add stores data as a UnixFS file laid out as l and returns its
	// root. A store that cannot make the layout skips the test.
	Add func(t testing.TB, data []byte, l Layout) cid.Cid
	// Remove deletes the block c from the store and returns what puts it
	// back; nil when the store cannot (the case is skipped).
	Remove func(t testing.TB, c cid.Cid) (restore func())
	// Damage makes the store hold other bytes for the block c and returns
	// what repairs it; nil when the store cannot.
	Damage func(t testing.TB, c cid.Cid) (restore func())
}

// Payload returns n deterministic bytes that differ with seed.
func Payload(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		s := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", seed, i)))
		b.Write(s[:])
	}
	return b.Bytes()[:n]
}

// Run runs the conformance suite against the store newStore makes.
func Run(t *testing.T, newStore func(t *testing.T) *Store) {
	s := newStore(t)
	ctx := t.Context()
	read := func(t *testing.T, c cid.Cid) ([]byte, int64, error) {
		t.Helper()
		f, err := unixfs.Open(ctx, s.Source, c, unixfs.Options{Prefetch: 4})
		if err != nil {
			return nil, 0, err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		return b, f.Size(), err
	}

	t.Run("shapes", func(t *testing.T) {
		data := Payload("shapes", 300000)
		for _, tc := range []struct {
			name string
			data []byte
			l    Layout
		}{
			{"empty", nil, Layout{Chunk: 1024, RawLeaves: true, CIDv1: true}},
			{"one raw block", data[:1000], Layout{Chunk: 262144, RawLeaves: true, CIDv1: true}},
			{"one dag-pb block", data[:1000], Layout{Chunk: 262144}},
			{"default shape", data, Layout{Chunk: 262144, RawLeaves: true, CIDv1: true}},
			{"deep", data[:100000], Layout{Chunk: 1000, MaxLinks: 3, RawLeaves: true, CIDv1: true}},
			{"dag-pb leaves (CIDv0)", data[:5500], Layout{Chunk: 1000}},
			{"trickle", data, Layout{Chunk: 1024, MaxLinks: 4, RawLeaves: true, CIDv1: true, Trickle: true}},
			{"repeated chunks", bytes.Repeat([]byte("same chunk of 32 bytes, again.\n"), 4096), Layout{Chunk: 1024, MaxLinks: 4, RawLeaves: true, CIDv1: true}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := s.Add(t, tc.data, tc.l)
				got, size, err := read(t, c)
				if err != nil || !bytes.Equal(got, tc.data) || size != int64(len(tc.data)) {
					t.Fatalf("read %s: %d bytes (size %d), %v; want %d bytes", c, len(got), size, err, len(tc.data))
				}
				if st, ok := s.Source.(unixfs.Streamer); ok {
					for _, off := range []int64{0, 1, int64(len(tc.data)) / 2, int64(len(tc.data))} {
						if off > int64(len(tc.data)) || (off == 1 && len(tc.data) == 0) {
							continue
						}
						rc, err := st.Stream(ctx, c, off)
						if err != nil {
							t.Fatalf("Stream %s from %d: %v", c, off, err)
						}
						got, err := io.ReadAll(rc)
						rc.Close()
						if err != nil || !bytes.Equal(got, tc.data[off:]) {
							t.Fatalf("Stream %s from %d: %d bytes, %v; want %d", c, off, len(got), err, len(tc.data)-int(off))
						}
					}
				}
			})
		}
	})

	t.Run("identity", func(t *testing.T) {
		// An identity CID carries its bytes: no source is asked.
		id, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.IDENTITY, MhLength: -1}.Sum([]byte("inline"))
		got, size, err := read(t, id)
		if err != nil || string(got) != "inline" || size != 6 {
			t.Fatalf("identity CID: %q (size %d), %v", got, size, err)
		}
	})

	t.Run("not a file", func(t *testing.T) {
		c := s.Add(t, Payload("dag-cbor", 10), Layout{Chunk: 1024, RawLeaves: true, CIDv1: true})
		cbor := cid.NewCidV1(cid.DagCBOR, c.Hash())
		if _, _, err := read(t, cbor); !errs.Is(err, errs.Invalid) {
			t.Fatalf("read of a dag-cbor CID = %v, want Invalid", err)
		}
	})

	// A file of one level: the root and ten leaves of 1000 bytes, its own
	// bytes for each case: a daemon remembers what it found missing.
	oneLevel := func(t *testing.T) (root cid.Cid, data []byte, leaves []cid.Cid) {
		t.Helper()
		data = Payload(t.Name(), 10000)
		root = s.Add(t, data, Layout{Chunk: 1000, RawLeaves: true, CIDv1: true})
		b, err := s.Source.Block(ctx, root)
		if err != nil {
			t.Fatalf("Block(root): %v", err)
		}
		pn, err := merkledag.DecodeProtobuf(b)
		if err != nil || len(pn.Links()) != 10 {
			t.Fatalf("root: %v, %d links; want 10", err, len(pn.Links()))
		}
		for _, l := range pn.Links() {
			leaves = append(leaves, l.Cid)
		}
		return root, data, leaves
	}

	t.Run("missing block", func(t *testing.T) {
		if s.Remove == nil {
			t.Skip("the store cannot lose a block")
		}
		root, data, leaves := oneLevel(t)
		defer s.Remove(t, leaves[3])()
		got, _, err := read(t, root)
		if err == nil || !bytes.Equal(got, data[:3000]) {
			t.Fatalf("read without block 4: %d bytes, %v; want the first 3 blocks, then an error", len(got), err)
		}
		if k := errs.KindOf(err); k != errs.NotYet && k != errs.Transient {
			t.Fatalf("read without block 4: %v (kind %s), want not_yet or transient", err, k)
		}
	})

	t.Run("damaged node", func(t *testing.T) {
		if s.Damage == nil {
			t.Skip("the store cannot be damaged")
		}
		root, _, _ := oneLevel(t)
		defer s.Damage(t, root)()
		got, _, err := read(t, root)
		if !errs.Is(err, errs.Corrupt) || len(got) != 0 {
			t.Fatalf("read of a damaged root: %d bytes, %v (kind %s); want Corrupt", len(got), err, errs.KindOf(err))
		}
	})

	t.Run("damaged leaf", func(t *testing.T) {
		if s.Damage == nil {
			t.Skip("the store cannot be damaged")
		}
		if s.Source.Checks() == unixfs.CheckNodesOnly {
			t.Skip("leaves are left to the caller's end-to-end check (unixfs.CheckNodesOnly)")
		}
		root, _, leaves := oneLevel(t)
		defer s.Damage(t, leaves[3])()
		got, _, err := read(t, root)
		if !errs.Is(err, errs.Corrupt) || len(got) > 3000 {
			t.Fatalf("read with a damaged leaf: %d bytes, %v (kind %s); want Corrupt, at most the 3000 bytes before it", len(got), err, errs.KindOf(err))
		}
	})
}
