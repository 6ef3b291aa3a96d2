package warm_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"go.uber.org/goleak"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/ipfs/warm"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair is kubo A holding a file of 64 KiB leaves, and kubo C connected
// to it, read through a Reader with C's block store read straight.
func pair(t *testing.T, size int) (file cid.Cid, leaves []cid.Cid, c *testenv.Kubo, d *warm.Daemon, fs *unixfs.FlatFS) {
	t.Helper()
	ctx := context.Background()
	a := testenv.StartKubo(t)
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	p := ipfs.DefaultParams()
	p.Chunker = "size-65536"
	file, err := a.Client.Add(ctx, bytes.NewReader(data), p, true)
	if err != nil {
		t.Fatal(err)
	}
	root, err := a.Client.Block(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	pn, err := merkledag.DecodeProtobuf(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range pn.Links() {
		leaves = append(leaves, l.Cid)
	}
	c, rd := testenv.StartClientOf(t, a)
	fs, why := rd.BlockStore()
	if fs == nil {
		t.Fatalf("C's block store: %s", why)
	}
	return file, leaves, c, warm.New(rd), fs
}

// localRefs is how many blocks kubo k holds.
func localRefs(t *testing.T, k *testenv.Kubo) int {
	return len(strings.Fields(k.IPFS(t, "refs", "local")))
}

// TestFetchListInOrderThroughOneRequest: a list of 40 leaves, split into
// listing nodes of 16, arrives whole on C, reported in the list's order,
// and the listing nodes are gone after.
func TestFetchListInOrderThroughOneRequest(t *testing.T) {
	defer warm.SetMaxListLinks(16)()
	_, leaves, c, d, fs := pair(t, 40<<16)
	if len(leaves) != 40 {
		t.Fatalf("%d leaves, want 40", len(leaves))
	}
	rand.Shuffle(len(leaves), func(i, j int) { leaves[i], leaves[j] = leaves[j], leaves[i] })
	before := localRefs(t, c)
	var got []int
	if err := d.FetchList(context.Background(), leaves, func(i int) {
		if !fs.Has(leaves[i]) {
			t.Errorf("leaf %d reported before C holds it", i)
		}
		got = append(got, i)
	}); err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		if g != i {
			t.Fatalf("reported %v, want 0..%d in order", got, len(leaves)-1)
		}
	}
	if len(got) != len(leaves) {
		t.Fatalf("%d reported, want %d", len(got), len(leaves))
	}
	if after := localRefs(t, c); after != before+len(leaves) {
		t.Errorf("C holds %d blocks, had %d: want exactly the %d leaves more (the listing nodes removed)", after, before, len(leaves))
	}
}

// TestFetchListOfMissingBlockEndsWithTheContext: a block nobody has keeps
// the list waiting until its context ends; the error says so, and the
// listing node is removed all the same.
func TestFetchListOfMissingBlockEndsWithTheContext(t *testing.T) {
	_, leaves, c, d, _ := pair(t, 2<<16)
	missing, err := cid.V1Builder{Codec: cid.Raw, MhType: 0x12}.Sum([]byte("held by nobody"))
	if err != nil {
		t.Fatal(err)
	}
	before := localRefs(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var got []int
	err = d.FetchList(ctx, append(leaves, missing), func(i int) { got = append(got, i) })
	if err == nil {
		t.Fatal("a list with a block nobody has succeeded")
	}
	if len(got) != len(leaves) {
		t.Errorf("reported %v before the missing block, want the %d leaves", got, len(leaves))
	}
	if after := localRefs(t, c); after != before+len(leaves) {
		t.Errorf("C holds %d blocks, had %d: want the %d leaves more and no listing node", after, before, len(leaves))
	}
}

// TestWarmFillsTheStoreThroughAList: the substituter's warm of a file on
// A leaves every block of it on C, fetched as one list.
func TestWarmFillsTheStoreThroughAList(t *testing.T) {
	file, leaves, _, d, fs := pair(t, 30<<16)
	w := &unixfs.Warmer{Parallel: 8, Stall: time.Minute}
	st, err := d.Warm(context.Background(), w, file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != len(leaves)+1 || st.Fetched != len(leaves) || st.Retries != 0 {
		t.Errorf("stats %+v, want %d blocks, %d fetched, no retry", st, len(leaves)+1, len(leaves))
	}
	for i, l := range leaves {
		if !fs.Has(l) {
			t.Fatalf("leaf %d not held after the warm", i)
		}
	}
}
