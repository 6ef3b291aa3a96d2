package nardag

import (
	"context"
	"io"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// Sink receives each block of a DAG as it is made, leaves before the
// nodes that link them, the root last. data is valid only until the sink
// returns (the splitter reuses its buffers): a sink that keeps a block
// copies it.
type Sink func(c cid.Cid, data []byte) error

// Prefix is the CID prefix of inner nodes: CIDv1, dag-pb, SHA-256, as
// `ipfs add --cid-version=1` makes them (leaves are raw, same hash).
var Prefix = cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}

// Splitter returns the splitter name names over r: a Refs name (cutting
// around hashes) or one of kubo's ("buzhash", "size-N", "rabin-...").
func Splitter(r io.Reader, name string, hashes []string) (chunker.Splitter, error) {
	if IsRefs(name) {
		refs, err := ParseRefs(name)
		if err != nil {
			return nil, err
		}
		return NewRefSplitter(r, refs, hashes), nil
	}
	s, err := chunker.FromString(r, name)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "chunker %q: %w", name, err)
	}
	return s, nil
}

// Build builds the UnixFS DAG of r cut by the chunker name names (hashes
// are the hash parts a Refs chunker cuts around: the path's own and its
// references'), hands every block to sink and returns the root CID: the
// CID `ipfs add --cid-version=1 --chunker=NAME` gives for kubo's chunkers.
func Build(ctx context.Context, r io.Reader, name string, hashes []string, sink Sink) (cid.Cid, error) {
	spl, err := Splitter(r, name, hashes)
	if err != nil {
		return cid.Undef, err
	}
	return Layout(ctx, spl, Prefix, sink)
}

// Layout lays the chunks of spl out as kubo does (raw leaves, balanced,
// 174 links per node) with CIDs from builder.
func Layout(ctx context.Context, spl chunker.Splitter, builder cid.Builder, sink Sink) (cid.Cid, error) {
	params := helpers.DagBuilderParams{
		Maxlinks:   helpers.DefaultLinksPerBlock,
		RawLeaves:  true,
		CidBuilder: builder,
		Dagserv:    dagSink{ctx: ctx, sink: sink},
	}
	db, err := params.New(spl)
	if err != nil {
		return cid.Undef, err
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		return cid.Undef, err
	}
	return nd.Cid(), nil
}

// dagSink is a DAGService that keeps nothing: it hands each block to a
// Sink. Building a DAG never reads one back.
type dagSink struct {
	ctx  context.Context
	sink Sink
}

var _ ipld.DAGService = dagSink{}

func (d dagSink) Add(_ context.Context, n ipld.Node) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	if n.Cid().Prefix().MhType == mh.IDENTITY {
		// Inlined in its parent's link: never stored or sent alone.
		return nil
	}
	return d.sink(n.Cid(), n.RawData())
}

func (d dagSink) AddMany(ctx context.Context, ns []ipld.Node) error {
	for _, n := range ns {
		if err := d.Add(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (dagSink) Get(context.Context, cid.Cid) (ipld.Node, error) {
	return nil, errs.Errorf(errs.Invalid, "nardag: a DAG being built is not read back")
}

func (dagSink) GetMany(context.Context, []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption)
	close(ch)
	return ch
}

func (dagSink) Remove(context.Context, cid.Cid) error       { return nil }
func (dagSink) RemoveMany(context.Context, []cid.Cid) error { return nil }
