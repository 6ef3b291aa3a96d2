package ipfs_test

import (
	"bytes"
	"encoding/base32"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// blockFile is where kubo's default flatfs (next-to-last/2) keeps c's
// block, computed here independently of the code under test.
func blockFile(repo string, c cid.Cid) string {
	key := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(c.Hash())
	return filepath.Join(repo, "blocks", key[len(key)-3:len(key)-1], key+".data")
}

// leaves lists the raw blocks of c's file, in order, as kubo reports them.
func leaves(t *testing.T, k *testenv.Kubo, c cid.Cid) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	for _, l := range strings.Fields(k.IPFS(t, "refs", "-r", c.String())) {
		lc := cid.MustParse(l)
		if lc.Prefix().Codec == cid.Raw {
			out = append(out, lc)
		}
	}
	return out
}

// TestFlatFS: files read straight from a real kubo's block store are the
// files kubo serves, whatever their shape; a block the store lacks is
// ErrNotLocal; a damaged node is refused; and a Reader using the store
// reads on through the daemon from the first block it lacks.
func TestFlatFS(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx := t.Context()
	fs, err := unixfs.OpenFlatFS(k.Repo)
	if err != nil {
		t.Fatal(err)
	}
	read := func(c cid.Cid) ([]byte, int64, error) {
		f, err := fs.Open(ctx, c)
		if err != nil {
			return nil, 0, err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		return b, f.Size(), err
	}
	wide := ipfs.DefaultParams()
	wide.MaxFileLinks = 3 // a deep DAG from a small file
	v0 := ipfs.Params{CIDVersion: 0, Chunker: "size-1000", HashFunction: "sha2-256"}
	for _, tc := range []struct {
		name string
		size int
		p    ipfs.Params
	}{
		{"empty", 0, ipfs.DefaultParams()},
		{"one raw block", 1000, ipfs.DefaultParams()},
		{"many blocks", 3<<20 + 17, ipfs.DefaultParams()},
		{"deep", 100000, func() ipfs.Params { p := wide; p.Chunker = "size-1000"; return p }()},
		{"dag-pb leaves (CIDv0)", 5500, v0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(uint64(tc.size)+7, tc.size)
			c, err := k.Client.Add(ctx, bytes.NewReader(data), tc.p, false)
			if err != nil {
				t.Fatal(err)
			}
			got, size, err := read(c)
			if err != nil || !bytes.Equal(got, data) || size != int64(len(data)) {
				t.Fatalf("read %s: %d bytes (size %d), %v; want %d bytes", c, len(got), size, err, len(data))
			}
		})
	}

	data := randomBytes(99, 2<<20+5)
	c, err := k.Client.Add(ctx, bytes.NewReader(data), ipfs.DefaultParams(), false)
	if err != nil {
		t.Fatal(err)
	}
	ls := leaves(t, k, c)
	if len(ls) != 9 {
		t.Fatalf("%d leaves, want 9 of 256 KiB", len(ls))
	}

	t.Run("missing block", func(t *testing.T) {
		// The fourth leaf goes (as a repo GC would take it); the
		// daemon holds it again after the test.
		gone := blockFile(k.Repo, ls[3])
		saved, err := os.ReadFile(gone)
		if err != nil {
			t.Fatalf("the block is not where flatfs keeps it: %v", err)
		}
		if err := os.Remove(gone); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(gone, saved, 0o644)
		got, _, err := read(c)
		if !errors.Is(err, unixfs.ErrNotLocal) || !bytes.Equal(got, data[:3<<18]) {
			t.Fatalf("read without block 4: %d bytes, %v; want the first 3 blocks, then ErrNotLocal", len(got), err)
		}
		if _, err := fs.Open(ctx, cid.NewCidV1(cid.Raw, mustSum(t, []byte("not added")))); !errors.Is(err, unixfs.ErrNotLocal) {
			t.Fatalf("Open of an absent CID = %v, want ErrNotLocal", err)
		}

		// A Reader whose block store lacks the block reads the rest
		// through its daemon, from the offset reached. Here the store is
		// this repository's, and the daemon another that holds the
		// whole file (as a daemon fetching from its peers would).
		other := testenv.StartKubo(t, testenv.KuboOffline())
		if oc, err := other.Client.Add(ctx, bytes.NewReader(data), ipfs.DefaultParams(), false); err != nil || !oc.Equals(c) {
			t.Fatalf("add to the other daemon: %s, %v", oc, err)
		}
		core, logs := observer.New(zap.InfoLevel)
		r, err := ipfs.NewReader(other.Client, other.Gateway, zap.New(core))
		if err != nil {
			t.Fatal(err)
		}
		r.UseBlockStore(k.Repo)
		if bs, why := r.BlockStore(); bs == nil {
			t.Fatalf("BlockStore: %s", why)
		}
		got, err = readerCat(t, r, ctx, c)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Cat with a block missing from the store: %d bytes, %v", len(got), err)
		}
		if n := logs.FilterMessage("block store read stopped; kubo reads the rest").FilterField(zap.Int64("offset", 3<<18)).Len(); n != 1 {
			t.Fatalf("log %v: want the switch to kubo at byte %d", logs.All(), 3<<18)
		}
		if n := logs.FilterMessage("reading blocks straight from kubo's block store").Len(); n != 1 {
			t.Fatalf("log %v: want the block store named once", logs.All())
		}
	})

	t.Run("damaged node", func(t *testing.T) {
		root := blockFile(k.Repo, c)
		saved, err := os.ReadFile(root)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(root, saved, 0o644)
		bad := bytes.Clone(saved)
		bad[len(bad)-3] ^= 1
		if err := os.WriteFile(root, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := read(c); err == nil || !strings.Contains(err.Error(), "does not hash to its CID") {
			t.Fatalf("read of a damaged root = %v, want it refused", err)
		}
	})

	t.Run("not flatfs", func(t *testing.T) {
		repo := t.TempDir()
		os.WriteFile(filepath.Join(repo, "datastore_spec"), []byte(`{"mounts":[{"mountpoint":"/blocks","path":"blocks","type":"badgerds"}],"type":"mount"}`), 0o644)
		if _, err := unixfs.OpenFlatFS(repo); err == nil || !strings.Contains(err.Error(), "not flatfs") {
			t.Fatalf("OpenFlatFS of a badger repository = %v", err)
		}
		if _, err := unixfs.OpenFlatFS(t.TempDir()); err == nil || !strings.Contains(err.Error(), "datastore_spec") {
			t.Fatalf("OpenFlatFS of an empty directory = %v", err)
		}
	})
}

func mustSum(t *testing.T, b []byte) mh.Multihash {
	t.Helper()
	m, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
