package unixfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"go.uber.org/zap"
)

// carAccept asks for a CARv1 in depth-first order with duplicate blocks
// repeated: exactly the order in which the walk needs the blocks, so no
// block needs to be held in memory.
const carAccept = "application/vnd.ipld.car;version=1;order=dfs;dups=y"

// maxCARHeader bounds the CAR header (a list of roots) read from a gateway.
const maxCARHeader = 64 << 10

// carStream is a file's DAG arriving as one CAR (trustless gateway
// `?format=car&dag-scope=entity`): a Sequence. The walk takes blocks from
// it in order, each checked against its CID by the block reader and
// matched to the CID the walk needs next; anything else ends the CAR and
// the walk continues block by block.
type carStream struct {
	g    *Gateway
	ctx  context.Context
	root cid.Cid
	body io.ReadCloser
	br   *car.BlockReader
}

var _ Sequence = (*carStream)(nil)

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
	cs.g, cs.ctx = g, ctx
	return cs, nil
}

// newCARStream reads a CAR's header from body and checks that root is
// among its roots.
func newCARStream(body io.ReadCloser, root cid.Cid) (*carStream, error) {
	br, err := car.NewBlockReader(body, car.MaxAllowedHeaderSize(maxCARHeader), car.MaxAllowedSectionSize(MaxBlockSize+1024),
		car.WithTrustedCAR(false))
	if err != nil {
		return nil, fmt.Errorf("CAR header: %w", err)
	}
	for _, r := range br.Roots {
		if r.Equals(root) {
			return &carStream{root: root, body: body, br: br}, nil
		}
	}
	return nil, fmt.Errorf("CAR roots %v do not name %s: %w", br.Roots, root, ErrBlockMismatch)
}

// Next returns the next block of the CAR if it is c, checked. Any other
// outcome is an error, logged once, after which the stream is not used.
func (cs *carStream) Next(c cid.Cid) ([]byte, error) {
	data, err := cs.next(c)
	if err != nil && !errors.Is(err, context.Canceled) && cs.ctx.Err() == nil {
		cs.g.carFallbacks.Add(1)
		cs.g.log.Warn("gateway CAR abandoned; the rest of the NAR is fetched block by block", zap.String("gateway", cs.g.base), zap.Error(err))
	}
	return data, err
}

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

// Close closes the response. After a complete walk, anything left in the
// CAR is only worth a line in the log: every byte was checked already.
func (cs *carStream) Close(complete bool) {
	if complete {
		if end := cs.end(); end != nil {
			cs.g.log.Warn("gateway CAR has more than the file's DAG; ignored", zap.String("gateway", cs.g.base), zap.String("cid", cs.root.String()), zap.Error(end))
		}
	}
	cs.body.Close()
}
