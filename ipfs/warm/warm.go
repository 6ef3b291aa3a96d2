// Package warm has a kubo daemon fetch a file's blocks before the file is
// read, in the order a unixfs.Warmer chooses (the leaves shuffled, so that
// clients on one network fetching the same closure ask the mirror for
// different blocks and take the rest from each other).
//
// # One bitswap session a list, not one a block
//
// kubo's RPC has no call that fetches a list of blocks in an order the
// caller chooses. block/stat fetches one, and each call is a bitswap
// session of its own (boxo's Client.GetBlocks): a want-have broadcast to
// every connected peer, then a want-block, for every block. On a small
// machine that cost per block is what limits a fresh fetch, and sixteen
// clients on two cores pay it sixteen times over. So a Daemon writes the
// list into the daemon as a dag-pb node of its own (block/put, unpinned,
// with a random nonce as its data so no two lists are the same block),
// and `refs -r` of that node fetches the leaves through one session, in
// the node's link order, 64 wants at a time (boxo's live-want limit of a
// session), printing each as it arrives, in order. The node is removed
// after. Through one session a NAR, the fetching kubo spent about a
// third less CPU on a fresh fetch of the upgrade workload
// (internal/chunkstudy's TestStudyWarmWays; docs/CHUNKING.md). The
// substituter uses it for a client alone: in a fleet on a LAN a long
// session costs duplicate blocks (unixfs.Warmer's Lists).
package warm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipfs/kubo/core/coreiface/options"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// Daemon warms the files read through one kubo Reader. It is a
// unixfs.ListFetcher.
type Daemon struct {
	r *ipfs.Reader
	k *ipfs.Kubo
}

// New warms through r's daemon.
func New(r *ipfs.Reader) *Daemon { return &Daemon{r: r, k: r.Kubo()} }

var (
	_ unixfs.Fetcher     = (*Daemon)(nil)
	_ unixfs.ListFetcher = (*Daemon)(nil)
)

// Warm makes the daemon hold every block of the file c before it is read
// (unixfs.Warmer), asking only for those its block store lacks when the
// store is read straight (ipfs.Reader.BlockStore). progress is called as
// blocks arrive.
func (d *Daemon) Warm(ctx context.Context, w *unixfs.Warmer, c cid.Cid, progress func()) (unixfs.WarmStats, error) {
	if !c.Defined() {
		return unixfs.WarmStats{}, errors.New("warm: undefined CID")
	}
	var src unixfs.Source = d.k
	var has unixfs.Haver
	if fs, _ := d.r.BlockStore(); fs != nil {
		src, has = localFirst{fs, d.k}, fs
	}
	return w.Warm(ctx, src, d, has, c, progress)
}

// Fetch fetches one block (block/stat: a session of its own).
func (d *Daemon) Fetch(ctx context.Context, c cid.Cid) error { return d.k.Fetch(ctx, c) }

// maxListLinks bounds the links of one listing node: 4,096 links of
// about 40 bytes, well under the 1 MiB kubo's block/put takes. A longer
// list is several nodes, named in one refs call: still one session.
var maxListLinks = 4096

// listPrefix: CIDv1, dag-pb, SHA-256, as block/put makes it.
var listPrefix = cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}

// FetchList makes the daemon fetch list through one bitswap session, in
// its order, and calls got(i) as list[i] is held, in order.
func (d *Daemon) FetchList(ctx context.Context, list []cid.Cid, got func(i int)) error {
	var nodes []string
	defer func() { d.remove(ctx, nodes) }()
	for i := 0; i < len(list); i += maxListLinks {
		c, err := d.putList(ctx, list[i:min(i+maxListLinks, len(list))])
		if err != nil {
			return err
		}
		nodes = append(nodes, c.String())
	}
	resp, err := d.k.RPC().Request("refs", nodes...).Option("recursive", true).Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return fmt.Errorf("kubo %s: refs -r of a list of %d blocks: %w", d.k, len(list), err)
	}
	defer resp.Output.Close()
	dec := json.NewDecoder(resp.Output)
	for i := 0; ; i++ {
		var ref struct{ Ref, Err string }
		if err := dec.Decode(&ref); err != nil {
			if err == io.EOF && i == len(list) {
				return nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("kubo %s: refs -r of a list of %d blocks, after %d: %w", d.k, len(list), i, err)
		}
		if ref.Err != "" {
			return fmt.Errorf("kubo %s: refs -r of a list of %d blocks, at %d: %s", d.k, len(list), i, ref.Err)
		}
		if i >= len(list) || ref.Ref != list[i].String() {
			return fmt.Errorf("kubo %s: refs -r of a list of %d blocks answered %q at %d, not the list's block", d.k, len(list), ref.Ref, i)
		}
		got(i)
	}
}

// putList stores a dag-pb node linking list, in order, unpinned.
func (d *Daemon) putList(ctx context.Context, list []cid.Cid) (cid.Cid, error) {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	nd := merkledag.NodeWithData(nonce)
	if err := nd.SetCidBuilder(listPrefix); err != nil {
		return cid.Undef, err
	}
	for _, c := range list {
		// No names: links are kept in the order they are added (a
		// stable sort by name).
		if err := nd.AddRawLink("", &ipld.Link{Cid: c}); err != nil {
			return cid.Undef, err
		}
	}
	data, err := nd.EncodeProtobuf(false)
	if err != nil {
		return cid.Undef, err
	}
	st, err := d.k.RPC().Block().Put(ctx, bytes.NewReader(data),
		options.Block.CidCodec("dag-pb"), options.Block.Hash(mh.SHA2_256, -1), options.Block.Pin(false))
	if err != nil {
		return cid.Undef, fmt.Errorf("kubo %s: block put of a list of %d blocks: %w", d.k, len(list), err)
	}
	return st.Path().RootCid(), nil
}

// remove deletes the listing nodes, best effort (left behind, they are
// unpinned blocks of a few KB that kubo's next GC collects), even when ctx
// has ended.
func (d *Daemon) remove(ctx context.Context, nodes []string) {
	if len(nodes) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	resp, err := d.k.RPC().Request("block/rm", nodes...).Option("force", true).Send(ctx)
	if err == nil {
		if resp.Output != nil {
			io.Copy(io.Discard, resp.Output)
		}
		resp.Close()
	}
}

// localFirst reads blocks from the local store, and through the daemon
// those it lacks.
type localFirst struct {
	local  *unixfs.FlatFS
	daemon *ipfs.Kubo
}

func (l localFirst) Block(ctx context.Context, c cid.Cid) ([]byte, error) {
	if b, err := l.local.Block(ctx, c); err == nil {
		return b, nil
	}
	return l.daemon.Block(ctx, c)
}
func (l localFirst) Checks() unixfs.Check { return unixfs.CheckNone }
func (l localFirst) String() string       { return l.daemon.String() }
