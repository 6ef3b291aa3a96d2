package ipfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/core/coreiface/options"
	mc "github.com/multiformats/go-multicodec"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/nardag"
)

var _ nardag.BlockPinner = (*Kubo)(nil)

// PinBlock stores data under c and pins c recursively without reading the
// DAG below (`block put --pin`: boxo's PinWithMode, as kubo's add; `pin
// add` and `dag import --pin-roots` walk the DAG): the caller vouches that
// the blocks below are stored before kubo's next GC (nardag.Import).
func (k *Kubo) PinBlock(ctx context.Context, c cid.Cid, data []byte) error {
	if err := needCID("block put", c); err != nil {
		return err
	}
	p := c.Prefix()
	st, err := k.api.Block().Put(ctx, bytes.NewReader(data),
		options.Block.CidCodec(mc.Code(p.Codec).String()),
		options.Block.Hash(p.MhType, p.MhLength),
		options.Block.Pin(true))
	if err != nil {
		return k.fail(ctx, err, "block put --pin %s", c)
	}
	if got := st.Path().RootCid(); !got.Equals(c) {
		// Another CID version of the same block (what was pinned is
		// the same DAG's root), or a block that is not c's: either way
		// c itself is not pinned.
		return errs.Errorf(errs.Invalid, "ipfs block put: got %s, want %s", got, c)
	}
	return nil
}

// DagImport sends cars, in order, in one `dag import` (kubo holds its GC
// lock from the first block to the last pin) and returns, for each root
// their headers name that kubo tried to pin (with pin), "" or its reason
// for not pinning it. nardag.Import streams a DAG through it.
func (k *Kubo) DagImport(ctx context.Context, cars []io.Reader, pin bool) (map[cid.Cid]string, error) {
	ents := make([]files.DirEntry, len(cars))
	for i, r := range cars {
		ents[i] = files.FileEntry(fmt.Sprintf("%d.car", i), files.NewReaderFile(r))
	}
	body := files.NewMultiFileReader(files.NewSliceDirectory(ents), false, false)
	resp, err := k.api.Request("dag/import").
		Option("pin-roots", pin).
		Option("stats", false).
		Body(body).
		Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, k.fail(ctx, err, "dag import")
	}
	defer resp.Close()
	roots := map[cid.Cid]string{}
	dec := json.NewDecoder(resp.Output)
	for {
		var ev struct {
			Root *struct {
				Cid         cid.Cid
				PinErrorMsg string
			}
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return roots, nil
			}
			return nil, k.failStream(ctx, err, "dag import")
		}
		if ev.Root != nil {
			roots[ev.Root.Cid] = ev.Root.PinErrorMsg
		}
	}
}
