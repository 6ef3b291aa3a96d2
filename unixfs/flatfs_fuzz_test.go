package unixfs_test

import (
	"context"
	"encoding/base32"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// blockFile is where kubo's default flatfs (next-to-last/2) keeps c's
// block, computed here independently of the code under test.
func blockFile(repo string, c cid.Cid) string {
	key := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(c.Hash())
	return filepath.Join(repo, "blocks", key[len(key)-3:len(key)-1], key+".data")
}

func mustSum(t testing.TB, b []byte) mh.Multihash {
	t.Helper()
	m, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// FuzzFlatFS: whatever bytes a block store holds for a file's root (and
// its one child), reading it ends, with the file's bytes or an error, and
// never panics. Both blocks hash to their CIDs, as a store holding
// someone's crafted blocks would.
func FuzzFlatFS(f *testing.F) {
	leaf := merkledag.NodeWithData(ft.FilePBData([]byte("leaf data"), 9))
	f.Add(leaf.RawData(), []byte("raw child"))
	root := ft.NewFSNode(ft.TFile)
	root.AddBlockSize(9)
	rb, _ := root.GetBytes()
	rn := merkledag.NodeWithData(rb)
	rn.AddNodeLink("", leaf)
	f.Add(rn.RawData(), leaf.RawData())
	f.Add([]byte{}, []byte{})
	f.Add([]byte{0x0a, 0x02, 0x08, 0x02}, []byte{0x12, 0x00})

	repo := f.TempDir()
	blocks := filepath.Join(repo, "blocks")
	if err := os.MkdirAll(blocks, 0o755); err != nil {
		f.Fatal(err)
	}
	os.WriteFile(filepath.Join(repo, "datastore_spec"), []byte(`{"mounts":[{"mountpoint":"/blocks","path":"blocks","shardFunc":"/repo/flatfs/shard/v1/next-to-last/2","type":"flatfs"}],"type":"mount"}`), 0o644)
	os.WriteFile(filepath.Join(blocks, "SHARDING"), []byte("/repo/flatfs/shard/v1/next-to-last/2\n"), 0o644)
	fs, err := unixfs.OpenFlatFS(repo)
	if err != nil {
		f.Fatal(err)
	}
	put := func(t *testing.T, codec uint64, b []byte) cid.Cid {
		c := cid.NewCidV1(codec, mustSum(t, b))
		p := blockFile(repo, c)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return c
	}
	f.Fuzz(func(t *testing.T, rootBytes, child []byte) {
		put(t, cid.DagProtobuf, child)
		put(t, cid.Raw, child)
		c := put(t, cid.DagProtobuf, rootBytes)
		file, err := fs.Open(context.Background(), c)
		if err != nil {
			return
		}
		defer file.Close()
		// A crafted root may claim any size; the reading must end
		// by itself, and well within what the blocks hold.
		n, _ := io.Copy(io.Discard, io.LimitReader(file, 1<<20))
		if n > int64(len(rootBytes)+len(child))*ipfsMaxFanout {
			t.Fatalf("read %d bytes from blocks of %d and %d", n, len(rootBytes), len(child))
		}
	})
}

// ipfsMaxFanout bounds how often a fuzzed root can name its one child.
const ipfsMaxFanout = 1 << 16
