package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/nar/nartest"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
)

// FuzzPublishedNARReadsBack builds a file tree from the fuzz input, has the
// real Publisher publish it (writeNAR: one stream into a SHA-256, the temp
// file that becomes nar/<hash>.nar, and IPFS), then reads the NAR in the
// cache back with go-nix's nar.NewReader: it must hold exactly the tree on
// disk (paths in NAR order, types, executable bits, contents, link targets)
// and match the narinfo and the CID; where go-nix's own writer copes with
// the tree, the bytes must be its bytes too. (Byte-identity with
// nix-store --dump is proven against real Nix by package nar's golden
// tests and the integration tests.)
// testdata/fuzz holds the input that found go-nix's writer refusing "..a".
func FuzzPublishedNARReadsBack(f *testing.F) {
	for _, s := range nartest.TreeSeeds() {
		f.Add(s)
	}
	sk, _, err := signature.GenerateKeypair("fuzz-1", nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, spec []byte) {
		root := t.TempDir()
		storeDir := filepath.Join(root, "store")
		sp := filepath.Join(storeDir, "0c6kzph7l0dcbfmjap64f0czdafn3b7x-fuzz")
		if err := os.MkdirAll(storeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		nartest.BuildTree(sp, spec)
		want := nartest.Walk(t, sp)

		dump := nartest.Dump(t, sp)
		sum := sha256.Sum256(dump)
		narHash := "sha256:" + nixbase32.EncodeToString(sum[:])
		store := &narFuzzStore{dir: storeDir, info: nixstore.PathInfo{Path: sp, NarHash: narHash, NarSize: uint64(len(dump))}}
		node := &narFuzzIPFS{}
		p, err := New(Options{Cache: Cache{Dir: filepath.Join(root, "cache")}, Key: sk, Params: ipfs.DefaultParams()}, store, node, nil)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := p.PublishPath(context.Background(), sp)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		nib, err := os.ReadFile(p.opt.Cache.NarInfoPath("0c6kzph7l0dcbfmjap64f0czdafn3b7x"))
		if err != nil {
			t.Fatal(err)
		}
		ni, err := narinfo.ParseBytes(nib)
		if err != nil {
			t.Fatalf("the narinfo written does not parse: %v", err)
		}
		written, err := os.ReadFile(p.opt.Cache.NarPath(ni.URL))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(written, dump) {
			t.Fatalf("the NAR in the cache (%d bytes) differs from a dump of the tree (%d)", len(written), len(dump))
		}
		if ni.NarHash != narHash || ni.NarSize != uint64(len(written)) || ni.FileSize != ni.NarSize || ev.CID != ni.IPFSHash || ni.IPFSHash != rawCIDOf(written) {
			t.Fatalf("narinfo %+v / event CID %s do not describe the NAR", ni, ev.CID)
		}

		nartest.Compare(t, nartest.Read(t, written), want)
	})
}

// rawCIDOf is the CID narFuzzIPFS gives data.
func rawCIDOf(data []byte) string {
	sum := sha256.Sum256(data)
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	return cid.NewCidV1(cid.Raw, mh).String()
}

// narFuzzStore serves one path's record.
type narFuzzStore struct {
	dir  string
	info nixstore.PathInfo
}

func (s *narFuzzStore) StoreDir() string { return s.dir }
func (s *narFuzzStore) QueryPathInfo(_ context.Context, p string) (*nixstore.PathInfo, error) {
	if p != s.info.Path {
		return nil, errs.E(errs.Invalid, nixstore.ErrNotValid)
	}
	c := s.info
	return &c, nil
}
func (s *narFuzzStore) Closure(_ context.Context, paths []string) ([]string, error) {
	return paths, nil
}
func (s *narFuzzStore) Close() error { return nil }

// narFuzzIPFS reads everything it is given and returns a raw CID of it.
type narFuzzIPFS struct{}

func (narFuzzIPFS) Add(_ context.Context, r io.Reader, _ ipfs.Params, _ bool) (cid.Cid, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return cid.Undef, err
	}
	return cid.Decode(rawCIDOf(b))
}
func (n narFuzzIPFS) AddAt(ctx context.Context, r io.Reader, _ string, prm ipfs.Params, pin bool) (cid.Cid, error) {
	return n.Add(ctx, r, prm, pin)
}
func (narFuzzIPFS) Unpin(context.Context, cid.Cid) error { return nil }
func (narFuzzIPFS) DagImport(_ context.Context, cars []io.Reader, _ bool) (map[cid.Cid]string, error) {
	return drainCARs(cars)
}
func (narFuzzIPFS) Self(context.Context) (ipfs.Node, error) {
	return ipfs.Node{PeerID: "12D3KooWfuzz"}, nil
}
