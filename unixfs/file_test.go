package unixfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs/unixfstest"
)

// memSource is blocks in a map, returned as stored (CheckNone).
type memSource struct {
	mu     sync.Mutex
	blocks map[cid.Cid][]byte
	asked  int
}

func (m *memSource) Block(ctx context.Context, c cid.Cid) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked++
	b, ok := m.blocks[c]
	if !ok {
		return nil, errs.Errorf(errs.NotYet, "%s: %w", c, unixfs.ErrNotLocal)
	}
	return b, nil
}
func (m *memSource) Checks() unixfs.Check { return unixfs.CheckNone }
func (m *memSource) String() string       { return "memory" }

func (m *memSource) put(n *merkledag.ProtoNode) cid.Cid {
	m.blocks[n.Cid()] = n.RawData()
	return n.Cid()
}

// chain builds a file of depth levels of one-link nodes over one raw leaf.
func chain(m *memSource, depth int, leaf []byte) cid.Cid {
	c := rawCID(leaf)
	m.blocks[c] = leaf
	size := uint64(len(leaf))
	for range depth {
		fsn := ft.NewFSNode(ft.TFile)
		fsn.AddBlockSize(size)
		b, _ := fsn.GetBytes()
		pn := merkledag.NodeWithData(b)
		pn.AddRawLink("", linkTo(c, size))
		c = m.put(pn)
	}
	return c
}

func TestDepthAndSize(t *testing.T) {
	m := &memSource{blocks: map[cid.Cid][]byte{}}
	ok := chain(m, unixfs.MaxDepth-1, []byte("leaf"))
	if got, err := readAll(m, ok); err != nil || string(got) != "leaf" {
		t.Fatalf("a DAG %d deep: %q, %v", unixfs.MaxDepth, got, err)
	}
	deep := chain(m, unixfs.MaxDepth+1, []byte("leaf"))
	if _, err := readAll(m, deep); !errs.Is(err, errs.Corrupt) || !strings.Contains(err.Error(), "deeper than") {
		t.Fatalf("a DAG deeper than %d: %v", unixfs.MaxDepth, err)
	}

	// A root that claims more bytes than its leaves hold.
	fsn := ft.NewFSNode(ft.TFile)
	fsn.AddBlockSize(10)
	b, _ := fsn.GetBytes()
	pn := merkledag.NodeWithData(b)
	leaf := []byte("four")
	m.blocks[rawCID(leaf)] = leaf
	pn.AddRawLink("", linkTo(rawCID(leaf), 10))
	liar := m.put(pn)
	if _, err := readAll(m, liar); !errs.Is(err, errs.Corrupt) {
		t.Fatalf("a root claiming 10 bytes over 4: %v", err)
	}
}

// TestPrefetchClose: a File closed half-way stops and waits for its
// prefetches (goleak in TestMain), and a leaf that does not hash to its
// CID is Corrupt at its offset.
func TestPrefetchClose(t *testing.T) {
	fg := unixfstest.NewFakeGateway(t)
	data := unixfstest.Payload("prefetch", 64<<10)
	root := fg.Add(t, data, 1024, 174, true, true, false)
	g, err := unixfs.NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Blocks = true
	rc, err := g.Cat(t.Context(), root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	rc.Close()

	m := &memSource{blocks: map[cid.Cid][]byte{}}
	for _, c := range append(fg.Leaves(t, root), root) {
		b, _ := g.Block(t.Context(), c)
		m.blocks[c] = b
	}
	bad := fg.Leaves(t, root)[5]
	m.blocks[bad] = bytes.Repeat([]byte{1}, 1024)
	f, err := unixfs.Open(t.Context(), m, root, unixfs.Options{Prefetch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if !errors.Is(err, unixfs.ErrBlockMismatch) || !errs.Is(err, errs.Corrupt) || !bytes.Equal(got, data[:5*1024]) {
		t.Fatalf("a bad leaf: %d bytes, %v", len(got), err)
	}
}

func linkTo(c cid.Cid, size uint64) *ipld.Link { return &ipld.Link{Cid: c, Size: size} }

func readAll(src unixfs.Source, c cid.Cid) ([]byte, error) {
	f, err := unixfs.Open(context.Background(), src, c, unixfs.Options{})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// TestResumer: a read that fails or ends short continues from the offset
// reached, at most max times; a declined resume returns the cause as is;
// a failed one says both.
func TestResumer(t *testing.T) {
	data := unixfstest.Payload("resume", 1000)
	cut := func(from, to int) io.ReadCloser {
		if to >= len(data) {
			return io.NopCloser(bytes.NewReader(data[from:]))
		}
		return io.NopCloser(io.MultiReader(bytes.NewReader(data[from:to]), errReader{io.ErrUnexpectedEOF}))
	}
	var offs []int64
	r := unixfs.NewResumer(cut(0, 300), 0, 1000, 3, "again", func(off int64, cause error) (io.ReadCloser, error) {
		offs = append(offs, off)
		if off == 600 {
			return io.NopCloser(bytes.NewReader(data[off:900])), nil // ends short
		}
		return cut(int(off), int(off)+300), nil
	})
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) || fmt.Sprint(offs) != "[300 600 900]" || r.Resumes() != 3 || r.ResumedBytes() != 700 {
		t.Fatalf("got %d bytes, %v; resumed at %v (%d), %d bytes after", len(got), err, offs, r.Resumes(), r.ResumedBytes())
	}

	cause := errors.New("broke")
	r = unixfs.NewResumer(io.NopCloser(errReader{cause}), 0, 10, 1, "again", func(int64, error) (io.ReadCloser, error) { return nil, nil })
	if _, err := io.ReadAll(r); err != cause {
		t.Fatalf("declined: %v", err)
	}
	r = unixfs.NewResumer(io.NopCloser(errReader{cause}), 0, 10, 1, "again", func(int64, error) (io.ReadCloser, error) {
		return nil, errors.New("no way")
	})
	if _, err := io.ReadAll(r); !errors.Is(err, cause) || err.Error() != "broke; again: no way" {
		t.Fatalf("failed resume: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
