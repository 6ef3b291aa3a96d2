package unixfstest

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	chunk "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/boxo/ipld/unixfs/importer/trickle"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// FakeGateway is a trustless gateway over an in-memory DAG service, built
// with boxo's own UnixFS importer: the httptest fixture the trustless
// gateway client (unixfs.Gateway) is tested against, here and through the
// substituter. It can be told to lie about blocks. Its fields are guarded
// by Mu.
type FakeGateway struct {
	DAG ipld.DAGService
	*httptest.Server

	Mu       sync.Mutex
	Corrupt  map[cid.Cid]bool // send these blocks with a flipped byte
	Whole    bool             // ignore the raw block request and send the file
	Requests int
	Raws     int // requests for raw blocks
	Accepts  map[string]int
	// car, if set, turns the CAR of a DAG into what is sent for
	// ?format=car (nil: a 400, as a gateway without CAR support).
	CAR func(good []byte) []byte
}

// carOf is the CARv1 a trustless gateway sends for root with
// order=dfs&dups=y: a header naming root, then every block in depth-first
// order, repeats included.
func CAROf(ctx context.Context, dag ipld.DAGService, root cid.Cid, corrupt map[cid.Cid]bool) ([]byte, error) {
	var out bytes.Buffer
	out.Write(CARHeader(root))
	var walk func(c cid.Cid) error
	walk = func(c cid.Cid) error {
		n, err := dag.Get(ctx, c)
		if err != nil {
			return err
		}
		data := bytes.Clone(n.RawData())
		if corrupt[c] && len(data) > 0 {
			data[len(data)-1] ^= 0x80
		}
		out.Write(CARSection(c, data))
		for _, l := range n.Links() {
			if err := walk(l.Cid); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// carHeader is a CARv1 header naming root: the dag-cbor map
// {"roots": [root], "version": 1}, length-prefixed.
func CARHeader(root cid.Cid) []byte {
	cb := append([]byte{0}, root.Bytes()...)
	var h []byte
	h = append(h, 0xa2, 0x65)
	h = append(h, "roots"...)
	h = append(h, 0x81, 0xd8, 0x2a)
	if len(cb) < 24 {
		h = append(h, 0x40+byte(len(cb)))
	} else {
		h = append(h, 0x58, byte(len(cb)))
	}
	h = append(h, cb...)
	h = append(h, 0x67)
	h = append(h, "version"...)
	h = append(h, 0x01)
	return append(binary.AppendUvarint(nil, uint64(len(h))), h...)
}

func CARSection(c cid.Cid, data []byte) []byte {
	cb := c.Bytes()
	out := binary.AppendUvarint(nil, uint64(len(cb)+len(data)))
	return append(append(out, cb...), data...)
}

func NewFakeGateway(t testing.TB) *FakeGateway {
	g := &FakeGateway{DAG: mdtest.Mock(), Corrupt: map[cid.Cid]bool{}, Accepts: map[string]int{}}
	g.Server = httptest.NewServer(http.HandlerFunc(g.Serve))
	t.Cleanup(g.Close)
	return g
}

func (g *FakeGateway) Serve(w http.ResponseWriter, r *http.Request) {
	g.Mu.Lock()
	g.Requests++
	g.Accepts[r.Header.Get("Accept")+" format="+r.URL.Query().Get("format")]++
	corrupt, whole, carf := g.Corrupt, g.Whole, g.CAR
	isCAR := r.URL.Query().Get("format") == "car"
	if !isCAR {
		g.Raws++
	}
	g.Mu.Unlock()
	c, err := cid.Decode(strings.TrimPrefix(r.URL.Path, "/ipfs/"))
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	n, err := g.DAG.Get(r.Context(), c)
	if err != nil {
		http.Error(w, err.Error(), 404)
		return
	}
	if isCAR {
		if carf == nil || r.URL.Query().Get("dag-scope") != "entity" {
			http.Error(w, "no CAR here", 400)
			return
		}
		good, err := CAROf(r.Context(), g.DAG, c, corrupt)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.ipld.car; version=1; order=dfs; dups=y")
		w.Write(carf(good))
		return
	}
	if whole {
		// A gateway that answers with the deserialised file.
		rd, err := FileReader(r.Context(), g.DAG, n)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.Copy(w, rd)
		return
	}
	b := bytes.Clone(n.RawData())
	if corrupt[c] {
		b[len(b)-1] ^= 0x80
	}
	w.Header().Set("Content-Type", "application/vnd.ipld.raw")
	w.Write(b)
}

// add imports data with the given layout and returns the root.
func (g *FakeGateway) Add(t testing.TB, data []byte, chunkSize int64, maxLinks int, rawLeaves bool, v1 bool, useTrickle bool) cid.Cid {
	t.Helper()
	p := helpers.DagBuilderParams{Maxlinks: maxLinks, RawLeaves: rawLeaves, Dagserv: g.DAG}
	if v1 {
		p.CidBuilder = merkledag.V1CidPrefix()
	}
	db, err := p.New(chunk.NewSizeSplitter(bytes.NewReader(data), chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	var nd ipld.Node
	if useTrickle {
		nd, err = trickle.Layout(db)
	} else {
		nd, err = balanced.Layout(db)
	}
	if err != nil {
		t.Fatal(err)
	}
	return nd.Cid()
}

// leaves returns the leaf CIDs under root in order.
func (g *FakeGateway) Leaves(t testing.TB, root cid.Cid) []cid.Cid {
	t.Helper()
	n, err := g.DAG.Get(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Links()) == 0 {
		return []cid.Cid{root}
	}
	var out []cid.Cid
	for _, l := range n.Links() {
		out = append(out, g.Leaves(t, l.Cid)...)
	}
	return out
}

func FileReader(ctx context.Context, dag ipld.DAGService, n ipld.Node) (io.Reader, error) {
	var buf bytes.Buffer
	var walk func(n ipld.Node) error
	walk = func(n ipld.Node) error {
		pn, ok := n.(*merkledag.ProtoNode)
		if !ok {
			buf.Write(n.RawData())
			return nil
		}
		fsn, err := unixfs.FSNodeFromBytes(pn.Data())
		if err != nil {
			return err
		}
		buf.Write(fsn.Data())
		for _, l := range pn.Links() {
			c, err := dag.Get(ctx, l.Cid)
			if err != nil {
				return err
			}
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return &buf, walk(n)
}
