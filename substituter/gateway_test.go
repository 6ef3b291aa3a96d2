package substituter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
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
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// fakeGateway is a trustless gateway over an in-memory DAG service, built
// with boxo's own UnixFS importer. It can be told to lie about blocks.
type fakeGateway struct {
	dag ipld.DAGService
	*httptest.Server

	mu       sync.Mutex
	corrupt  map[cid.Cid]bool // send these blocks with a flipped byte
	whole    bool             // ignore the raw block request and send the file
	requests int
	raws     int // requests for raw blocks
	accepts  map[string]int
	// car, if set, turns the CAR of a DAG into what is sent for
	// ?format=car (nil: a 400, as a gateway without CAR support).
	car func(good []byte) []byte
}

// carOf is the CARv1 a trustless gateway sends for root with
// order=dfs&dups=y: a header naming root, then every block in depth-first
// order, repeats included.
func carOf(ctx context.Context, dag ipld.DAGService, root cid.Cid, corrupt map[cid.Cid]bool) ([]byte, error) {
	var out bytes.Buffer
	out.Write(carHeader(root))
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
		out.Write(carSection(c, data))
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
func carHeader(root cid.Cid) []byte {
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

func carSection(c cid.Cid, data []byte) []byte {
	cb := c.Bytes()
	out := binary.AppendUvarint(nil, uint64(len(cb)+len(data)))
	return append(append(out, cb...), data...)
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{dag: mdtest.Mock(), corrupt: map[cid.Cid]bool{}, accepts: map[string]int{}}
	g.Server = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.Close)
	return g
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.requests++
	g.accepts[r.Header.Get("Accept")+" format="+r.URL.Query().Get("format")]++
	corrupt, whole, carf := g.corrupt, g.whole, g.car
	isCAR := r.URL.Query().Get("format") == "car"
	if !isCAR {
		g.raws++
	}
	g.mu.Unlock()
	c, err := cid.Decode(strings.TrimPrefix(r.URL.Path, "/ipfs/"))
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	n, err := g.dag.Get(r.Context(), c)
	if err != nil {
		http.Error(w, err.Error(), 404)
		return
	}
	if isCAR {
		if carf == nil || r.URL.Query().Get("dag-scope") != "entity" {
			http.Error(w, "no CAR here", 400)
			return
		}
		good, err := carOf(r.Context(), g.dag, c, corrupt)
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
		rd, err := fileReader(r.Context(), g.dag, n)
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
func (g *fakeGateway) add(t testing.TB, data []byte, chunkSize int64, maxLinks int, rawLeaves bool, v1 bool, useTrickle bool) cid.Cid {
	t.Helper()
	p := helpers.DagBuilderParams{Maxlinks: maxLinks, RawLeaves: rawLeaves, Dagserv: g.dag}
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
func (g *fakeGateway) leaves(t *testing.T, root cid.Cid) []cid.Cid {
	t.Helper()
	n, err := g.dag.Get(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Links()) == 0 {
		return []cid.Cid{root}
	}
	var out []cid.Cid
	for _, l := range n.Links() {
		out = append(out, g.leaves(t, l.Cid)...)
	}
	return out
}

func fileReader(ctx context.Context, dag ipld.DAGService, n ipld.Node) (io.Reader, error) {
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

func catAll(t *testing.T, g *Gateway, c cid.Cid) ([]byte, error) {
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
	fg := newFakeGateway(t)
	g, err := NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Blocks = true
	data := payload("gateway", 300000)
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
			root := fg.add(t, tc.data, tc.chunk, tc.links, tc.raw, tc.v1, tc.trickle)
			got, err := catAll(t, g, root)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("got %d bytes, want %d (equal: %v)", len(got), len(tc.data), bytes.Equal(got, tc.data))
			}
		})
	}
	fg.mu.Lock()
	defer fg.mu.Unlock()
	for a := range fg.accepts {
		if a != "application/vnd.ipld.raw format=raw" {
			t.Errorf("gateway asked with Accept/format %q", a)
		}
	}

	// An identity CID carries its bytes: nothing is fetched.
	id, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.IDENTITY, MhLength: -1}.Sum([]byte("inline"))
	before := fg.requests
	fg.mu.Unlock()
	got, err := catAll(t, g, id)
	fg.mu.Lock()
	if err != nil || string(got) != "inline" || fg.requests != before {
		t.Errorf("identity CID: %q %v, %d requests", got, err, fg.requests-before)
	}
}

// TestGatewayDetectsBadBlocks: a block that does not hash to its CID, or
// a gateway answering with something other than the raw block, is an
// ErrBlockMismatch, never data.
func TestGatewayDetectsBadBlocks(t *testing.T) {
	fg := newFakeGateway(t)
	g, _ := NewGateway(fg.URL+"/", nil)
	g.Blocks = true
	data := payload("bad-blocks", 20000)
	root := fg.add(t, data, 1024, 4, true, true, false)
	leaves := fg.leaves(t, root)
	for name, c := range map[string]cid.Cid{"root": root, "middle leaf": leaves[len(leaves)/2], "last leaf": leaves[len(leaves)-1]} {
		t.Run(name, func(t *testing.T) {
			fg.mu.Lock()
			fg.corrupt = map[cid.Cid]bool{c: true}
			fg.mu.Unlock()
			got, err := catAll(t, g, root)
			if !errors.Is(err, ErrBlockMismatch) {
				t.Fatalf("corrupt %s: err %v, %d bytes", name, err, len(got))
			}
			if len(got) >= len(data) {
				t.Errorf("corrupt %s: all %d bytes delivered", name, len(got))
			}
		})
	}
	fg.mu.Lock()
	fg.corrupt = map[cid.Cid]bool{}
	fg.whole = true
	fg.mu.Unlock()
	if _, err := catAll(t, g, root); !errors.Is(err, ErrBlockMismatch) {
		t.Errorf("gateway sending the file instead of the block: %v", err)
	}
	fg.mu.Lock()
	fg.whole = false
	fg.mu.Unlock()
	missing := rawCID([]byte("not in the gateway"))
	if _, err := catAll(t, g, missing); err == nil || errors.Is(err, ErrBlockMismatch) {
		t.Errorf("missing block: %v", err)
	}
	// A directory is not a NAR.
	dir := merkledag.NodeWithData(unixfs.FolderPBData())
	fg.dag.Add(context.Background(), dir)
	if _, err := catAll(t, g, dir.Cid()); err == nil {
		t.Errorf("directory read as a file")
	}
}

// TestGatewayBadBlockFallsBack: through the Server, a gateway returning a
// wrong block makes the NAR come from upstream, counted as block_mismatch;
// with honest blocks it comes from IPFS.
func TestGatewayBadBlockFallsBack(t *testing.T) {
	fg := newFakeGateway(t)
	gw, err := NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.IPFS = gw })
	good := payload("gw-good", 100000)
	bad := payload("gw-bad", 100000)
	var goodRoot, badRoot cid.Cid
	goodRoot = fg.add(t, good, 4096, 8, true, true, false)
	badRoot = fg.add(t, bad, 4096, 8, true, true, false)
	pg := f.addPath("gw-good", good, func(ni *narinfo.NarInfo) { ni.IPFSHash = goodRoot.String() })
	pb := f.addPath("gw-bad", bad, func(ni *narinfo.NarInfo) { ni.IPFSHash = badRoot.String() })
	leaves := fg.leaves(t, badRoot)
	fg.mu.Lock()
	fg.corrupt[leaves[3]] = true
	fg.mu.Unlock()

	for _, p := range []*storePath{pg, pb} {
		f.mustGet(http.MethodGet, p.narinfoPath())
		resp, b := f.mustGet(http.MethodGet, p.narPath())
		if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
			t.Fatalf("%s: %d, %d bytes", p.ni.StorePath, resp.StatusCode, len(b))
		}
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "ipfs")
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "upstream", "reason", ReasonBlockMismatch)
	if f.hitsOf(pg.narPath()) != 0 || f.hitsOf(pb.narPath()) != 1 {
		t.Errorf("upstream NAR requests: good %d, bad %d", f.hitsOf(pg.narPath()), f.hitsOf(pb.narPath()))
	}
}

func TestNewGateway(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":      "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/":     "http://127.0.0.1:8080",
		"https://gw.example/ipfs/":   "https://gw.example",
		"https://gw.example/prefix/": "https://gw.example/prefix",
	} {
		g, err := NewGateway(in, nil)
		if err != nil || g.String() != want {
			t.Errorf("NewGateway(%q) = %v, %v; want %s", in, g, err, want)
		}
	}
	for _, in := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://x/?a=b"} {
		if _, err := NewGateway(in, nil); err == nil {
			t.Errorf("NewGateway(%q) accepted", in)
		}
	}
}
