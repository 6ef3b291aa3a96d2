package substituter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	mh "github.com/multiformats/go-multihash"
	"go.uber.org/zap"
)

// carAccept asks for a CARv1 in depth-first order with duplicate blocks
// repeated: exactly the order in which the walker needs the blocks, so no
// block needs to be held in memory.
const carAccept = "application/vnd.ipld.car;version=1;order=dfs;dups=y"

// maxCARHeader bounds the CAR header (a list of roots) read from a gateway.
const maxCARHeader = 64 << 10

// carStream is a file's DAG arriving as one CAR (trustless gateway
// `?format=car&dag-scope=entity`). The walker takes blocks from it in
// order, each checked against its CID by the block reader and matched to
// the CID the walk needs next; anything else ends the CAR and the walk
// continues block by block.
type carStream struct {
	body io.ReadCloser
	br   *car.BlockReader
}

// openCAR requests c's DAG as a CAR. It returns nil, with the reason, when
// the gateway does not answer with one whose roots name c.
func (g *Gateway) openCAR(ctx context.Context, c cid.Cid) (*carStream, error) {
	u := g.base + "/ipfs/" + c.String() + "?format=car&dag-scope=entity"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", carAccept)
	req.Header.Set("User-Agent", "nix-ipfs-substituter")
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: CAR of %s: %w", g.base, c, err)
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("gateway %s: CAR of %s: HTTP %d", g.base, c, resp.StatusCode)
	}
	cs, err := newCARStream(resp.Body, c)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("gateway %s: CAR of %s: %w", g.base, c, err)
	}
	return cs, nil
}

// newCARStream reads a CAR's header from body and checks that root is
// among its roots.
func newCARStream(body io.ReadCloser, root cid.Cid) (*carStream, error) {
	br, err := car.NewBlockReader(body, car.MaxAllowedHeaderSize(maxCARHeader), car.MaxAllowedSectionSize(MaxBlockSize+1024))
	if err != nil {
		return nil, fmt.Errorf("CAR header: %w", err)
	}
	for _, r := range br.Roots {
		if r.Equals(root) {
			return &carStream{body: body, br: br}, nil
		}
	}
	return nil, fmt.Errorf("CAR roots %v do not name %s: %w", br.Roots, root, ErrBlockMismatch)
}

// next returns the next block of the CAR if it is c, checked. Any other
// outcome is an error, after which the stream must not be used.
func (cs *carStream) next(c cid.Cid) ([]byte, error) {
	blk, err := cs.br.Next()
	if err == io.EOF {
		return nil, fmt.Errorf("CAR ended before block %s: %w", c, io.ErrUnexpectedEOF)
	}
	if err != nil {
		// A bad section, or bytes that do not hash to the section's CID.
		return nil, fmt.Errorf("CAR block where %s was next: %w: %w", c, ErrBlockMismatch, err)
	}
	if !blk.Cid().Equals(c) {
		return nil, fmt.Errorf("CAR sent block %s where %s was next: %w", blk.Cid(), c, ErrBlockMismatch)
	}
	if len(blk.RawData()) > MaxBlockSize {
		return nil, fmt.Errorf("CAR block %s is larger than %d bytes: %w", c, MaxBlockSize, ErrBlockMismatch)
	}
	return blk.RawData(), nil
}

// end reports whether the CAR has nothing after the blocks read.
func (cs *carStream) end() error {
	blk, err := cs.br.Next()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return fmt.Errorf("after the last block: %w", err)
	default:
		return fmt.Errorf("extra block %s after the last one", blk.Cid())
	}
}

func (cs *carStream) close() { cs.body.Close() }

// blockFromCAR returns c's bytes from the walk's CAR, or false when there
// is no CAR (any more): then c is to be fetched as a block. A CAR that goes
// wrong is closed and logged, once.
func (wk *walker) blockFromCAR(c cid.Cid) ([]byte, bool) {
	if wk.car == nil {
		return nil, false
	}
	if c.Prefix().MhType == mh.IDENTITY {
		return nil, false // not fetched either way; Block decodes it
	}
	data, err := wk.car.next(c)
	if err != nil {
		wk.dropCAR(err)
		return nil, false
	}
	return data, true
}

func (wk *walker) dropCAR(err error) {
	wk.car.close()
	wk.car = nil
	if errors.Is(err, context.Canceled) || wk.ctx.Err() != nil {
		return
	}
	wk.g.carFallbacks.Add(1)
	wk.g.log.Warn("gateway CAR abandoned; the rest of the NAR is fetched block by block", zap.String("gateway", wk.g.base), zap.Error(err))
}
