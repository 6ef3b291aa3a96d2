package unixfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs/unixfstest"
)

func rawCID(b []byte) cid.Cid {
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(b)
	if err != nil {
		panic(err)
	}
	return c
}

func catAll(t *testing.T, g *unixfs.Gateway, c cid.Cid) ([]byte, error) {
	t.Helper()
	rc, err := g.Cat(context.Background(), c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestGatewayCat: files of every DAG shape the importer makes come back
// byte for byte, through verified raw blocks only.
func TestGatewayCat(t *testing.T) {
	fg := unixfstest.NewFakeGateway(t)
	g, err := unixfs.NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Blocks = true
	data := unixfstest.Payload("gateway", 300000)
	for _, tc := range []struct {
		name             string
		chunk            int64
		links            int
		raw, v1, trickle bool
		data             []byte
	}{
		{"v1 raw leaves balanced deep", 1024, 4, true, true, false, data},
		{"v1 raw leaves default shape", 262144, 174, true, true, false, data},
		{"v0 dag-pb leaves", 1024, 4, false, false, false, data},
		{"v1 trickle", 1024, 4, true, true, true, data},
		{"single raw block", 262144, 174, true, true, false, data[:1000]},
		{"single dag-pb block", 262144, 174, false, false, false, data[:1000]},
		{"empty", 1024, 4, true, true, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fg.Add(t, tc.data, tc.chunk, tc.links, tc.raw, tc.v1, tc.trickle)
			got, err := catAll(t, g, root)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("got %d bytes, want %d (equal: %v)", len(got), len(tc.data), bytes.Equal(got, tc.data))
			}
		})
	}
	fg.Mu.Lock()
	defer fg.Mu.Unlock()
	for a := range fg.Accepts {
		if a != "application/vnd.ipld.raw format=raw" {
			t.Errorf("gateway asked with Accept/format %q", a)
		}
	}

	// An identity CID carries its bytes: nothing is fetched.
	id, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.IDENTITY, MhLength: -1}.Sum([]byte("inline"))
	before := fg.Requests
	fg.Mu.Unlock()
	got, err := catAll(t, g, id)
	fg.Mu.Lock()
	if err != nil || string(got) != "inline" || fg.Requests != before {
		t.Errorf("identity CID: %q %v, %d requests", got, err, fg.Requests-before)
	}
}

// TestGatewayDetectsBadBlocks: a block that does not hash to its CID, or
// a gateway answering with something other than the raw block, is an
// unixfs.ErrBlockMismatch, never data.
func TestGatewayDetectsBadBlocks(t *testing.T) {
	fg := unixfstest.NewFakeGateway(t)
	g, _ := unixfs.NewGateway(fg.URL+"/", nil)
	g.Blocks = true
	data := unixfstest.Payload("bad-blocks", 20000)
	root := fg.Add(t, data, 1024, 4, true, true, false)
	leaves := fg.Leaves(t, root)
	for name, c := range map[string]cid.Cid{"root": root, "middle leaf": leaves[len(leaves)/2], "last leaf": leaves[len(leaves)-1]} {
		t.Run(name, func(t *testing.T) {
			fg.Mu.Lock()
			fg.Corrupt = map[cid.Cid]bool{c: true}
			fg.Mu.Unlock()
			got, err := catAll(t, g, root)
			if !errors.Is(err, unixfs.ErrBlockMismatch) {
				t.Fatalf("corrupt %s: err %v, %d bytes", name, err, len(got))
			}
			if len(got) >= len(data) {
				t.Errorf("corrupt %s: all %d bytes delivered", name, len(got))
			}
		})
	}
	fg.Mu.Lock()
	fg.Corrupt = map[cid.Cid]bool{}
	fg.Whole = true
	fg.Mu.Unlock()
	if _, err := catAll(t, g, root); !errors.Is(err, unixfs.ErrBlockMismatch) {
		t.Errorf("gateway sending the file instead of the block: %v", err)
	}
	fg.Mu.Lock()
	fg.Whole = false
	fg.Mu.Unlock()
	missing := rawCID([]byte("not in the gateway"))
	if _, err := catAll(t, g, missing); err == nil || errors.Is(err, unixfs.ErrBlockMismatch) {
		t.Errorf("missing block: %v", err)
	}
	// A directory is not a NAR.
	dir := merkledag.NodeWithData(ft.FolderPBData())
	fg.DAG.Add(context.Background(), dir)
	if _, err := catAll(t, g, dir.Cid()); err == nil {
		t.Errorf("directory read as a file")
	}
}

func TestNewGateway(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":      "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/":     "http://127.0.0.1:8080",
		"https://gw.example/ipfs/":   "https://gw.example",
		"https://gw.example/prefix/": "https://gw.example/prefix",
	} {
		g, err := unixfs.NewGateway(in, nil)
		if err != nil || g.String() != want {
			t.Errorf("unixfs.NewGateway(%q) = %v, %v; want %s", in, g, err, want)
		}
	}
	for _, in := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://x/?a=b"} {
		if _, err := unixfs.NewGateway(in, nil); err == nil {
			t.Errorf("unixfs.NewGateway(%q) accepted", in)
		}
	}
}
