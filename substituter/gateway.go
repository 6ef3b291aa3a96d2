package substituter

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// ErrBlockMismatch is a block whose bytes do not hash to its CID: the
// gateway (or something between) sent other data than asked for.
var ErrBlockMismatch = errors.New("block does not match its CID")

// MaxBlockSize is the largest block accepted from a gateway: 2 MiB, the
// most bitswap moves, so no IPFS node can hold a larger one it could serve.
const MaxBlockSize = 2 << 20

// maxDepth bounds the DAG's depth. A balanced UnixFS DAG of 174-link nodes
// holds 174^5 chunks (petabytes) at depth 5; trickle DAGs are deeper but
// not by this much.
const maxDepth = 64

// DefaultPrefetch is how many leaf blocks a Gateway fetches ahead of the
// reader.
const DefaultPrefetch = 8

// Gateway reads UnixFS files from an IPFS HTTP gateway without trusting it:
// it asks for every block separately as a trustless raw block
// (application/vnd.ipld.raw), checks each against the CID that names it, and
// walks the file's dag-pb nodes itself. Whatever the gateway does, the bytes
// Cat returns are the file the root CID names, or an error.
type Gateway struct {
	base     string // without a trailing slash
	client   *http.Client
	prefetch int
	// Blocks, if set, makes Cat ask for every block separately; by
	// default it asks for the whole file as one CAR first
	// (?format=car&dag-scope=entity) and checks every block of it the
	// same way, going block by block only where the CAR goes wrong.
	Blocks bool
	log    *zap.Logger

	carFallbacks atomic.Int64
}

// SetLogger sets where abandoned CARs are logged (default: nowhere).
func (g *Gateway) SetLogger(l *zap.Logger) { g.log = l }

// CARFallbacks is how many CARs went wrong, so that the walk continued
// block by block.
func (g *Gateway) CARFallbacks() int64 { return g.carFallbacks.Load() }

// NewGateway returns a client of the gateway at base (http(s)://host[:port]
// [/prefix], the part before /ipfs/). A nil client gets one with timeouts
// on connecting and on response headers.
func NewGateway(base string, client *http.Client) (*Gateway, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "gateway %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errs.Errorf(errs.Invalid, "gateway %q: want an http(s) URL", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errs.Errorf(errs.Invalid, "gateway %q: no query or fragment allowed", base)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/ipfs")
	if client == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           d.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: time.Minute,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   DefaultPrefetch * 2,
			DisableCompression:    true,
		}}
	}
	return &Gateway{base: strings.TrimSuffix(u.String(), "/"), client: client, prefetch: DefaultPrefetch, log: zap.NewNop()}, nil
}

// String is the gateway's URL, for logs.
func (g *Gateway) String() string { return g.base }

// Block fetches the block c and returns its bytes once they hash to c.
func (g *Gateway) Block(ctx context.Context, c cid.Cid) ([]byte, error) {
	pref := c.Prefix()
	if pref.MhType == mh.IDENTITY {
		// The bytes are the CID itself; nothing to fetch or trust.
		d, err := mh.Decode(c.Hash())
		if err != nil {
			return nil, errs.Errorf(errs.Invalid, "block %s: %w", c, err)
		}
		return d.Digest, nil
	}
	u := g.base + "/ipfs/" + c.String() + "?format=raw"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "block %s: %w", c, err)
	}
	req.Header.Set("Accept", "application/vnd.ipld.raw")
	req.Header.Set("User-Agent", "nix-ipfs-substituter")
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, errs.Errorf(errs.Transient, "gateway %s: block %s: %w", g.base, c, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, errs.Errorf(errs.Transient, "gateway %s: block %s: HTTP %d", g.base, c, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBlockSize+1))
	if err != nil {
		return nil, errs.Errorf(errs.Transient, "gateway %s: block %s: %w", g.base, c, err)
	}
	if len(data) > MaxBlockSize {
		return nil, errs.Errorf(errs.Corrupt, "gateway %s: block %s: larger than %d bytes: %w", g.base, c, MaxBlockSize, ErrBlockMismatch)
	}
	got, err := pref.Sum(data)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "block %s: cannot hash with its CID's prefix: %w", c, err)
	}
	if !got.Equals(c) {
		return nil, errs.Errorf(errs.Corrupt, "gateway %s: block %s: got bytes hashing to %s: %w", g.base, c, got, ErrBlockMismatch)
	}
	return data, nil
}

// Cat streams the UnixFS file c in file order: from one CAR of its DAG,
// each block checked against its CID as it arrives, or block by block
// with a few leaf blocks fetched ahead (with Blocks set, or from where the
// CAR went wrong: truncated, a block other than the next one needed, a
// block that does not hash to its CID). Memory stays bounded by (prefetch +
// DAG depth) blocks of at most MaxBlockSize. Closing the reader stops the
// walk.
func (g *Gateway) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	switch c.Type() {
	case cid.Raw, cid.DagProtobuf:
	default:
		return nil, errs.Errorf(errs.Invalid, "gateway: %s: codec %#x is not a UnixFS file", c, c.Type())
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	wk := &walker{g: g, ctx: ctx, w: pw, ahead: make(chan struct{}, g.prefetch)}
	go func() {
		if !g.Blocks && c.Prefix().MhType != mh.IDENTITY {
			cs, err := g.openCAR(ctx, c)
			if err != nil {
				if ctx.Err() == nil {
					g.carFallbacks.Add(1)
					g.log.Warn("gateway gave no usable CAR; fetching the NAR block by block", zap.String("gateway", g.base), zap.Error(err))
				}
			} else {
				wk.car = cs
			}
		}
		data, err := wk.block(c)
		if err == nil {
			err = wk.node(c, data, 0)
		}
		if err == nil && wk.car != nil {
			// Every byte was checked already; an extra block is only
			// worth a line in the log.
			if end := wk.car.end(); end != nil {
				g.log.Warn("gateway CAR has more than the file's DAG; ignored", zap.String("gateway", g.base), zap.String("cid", c.String()), zap.Error(end))
			}
		}
		if wk.car != nil {
			wk.car.close()
		}
		pw.CloseWithError(err) // nil: EOF
		cancel()
	}()
	return &catCloser{PipeReader: pr, cancel: cancel}, nil
}

type catCloser struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (c *catCloser) Close() error {
	c.cancel()
	return c.PipeReader.Close()
}

// walker writes a UnixFS file's bytes in order.
type walker struct {
	g     *Gateway
	ctx   context.Context
	w     io.Writer
	ahead chan struct{} // a token per leaf block fetched ahead and not yet written
	car   *carStream    // nil: block by block
}

// block returns c's checked bytes: from the CAR while there is one, else
// fetched alone.
func (wk *walker) block(c cid.Cid) ([]byte, error) {
	if data, ok := wk.blockFromCAR(c); ok {
		return data, nil
	}
	return wk.g.Block(wk.ctx, c)
}

func (wk *walker) node(c cid.Cid, data []byte, depth int) error {
	switch c.Type() {
	case cid.Raw:
		_, err := wk.w.Write(data)
		return err
	case cid.DagProtobuf:
	default:
		return errs.Errorf(errs.Corrupt, "block %s: codec %#x inside a UnixFS file", c, c.Type())
	}
	pn, err := merkledag.DecodeProtobuf(data)
	if err != nil {
		return errs.Errorf(errs.Corrupt, "block %s: not dag-pb: %w", c, err)
	}
	fsn, err := unixfs.FSNodeFromBytes(pn.Data())
	if err != nil {
		return errs.Errorf(errs.Corrupt, "block %s: not UnixFS: %w", c, err)
	}
	links := pn.Links()
	switch fsn.Type() {
	case unixfs.TFile, unixfs.TRaw:
	default:
		return errs.Errorf(errs.Invalid, "block %s: a UnixFS %s, not a file", c, fsn.Type())
	}
	if len(links) > 0 && len(fsn.BlockSizes()) != len(links) {
		return errs.Errorf(errs.Corrupt, "block %s: %d links but %d block sizes", c, len(links), len(fsn.BlockSizes()))
	}
	if d := fsn.Data(); len(d) > 0 {
		if _, err := wk.w.Write(d); err != nil {
			return err
		}
	}
	if len(links) == 0 {
		return nil
	}
	if depth >= maxDepth {
		return errs.Errorf(errs.Corrupt, "block %s: DAG deeper than %d", c, maxDepth)
	}
	return wk.children(links, depth+1)
}

type fetched struct {
	done chan struct{}
	data []byte
	err  error
}

// children walks links in order. Raw leaves are fetched ahead while tokens
// last; inner (dag-pb) nodes are fetched when reached, so that the tokens
// go to the leaves that carry the bytes and the memory held stays bounded.
func (wk *walker) children(links []*format.Link, depth int) error {
	// On an error, fetches still pending end when Cat cancels the walk's
	// context; their tokens no longer matter.
	pending := make([]*fetched, len(links))
	next := 0
	for i, l := range links {
		if next <= i {
			next = i + 1
		}
		if wk.car != nil {
			data, err := wk.block(l.Cid)
			if err != nil {
				return err
			}
			if err := wk.node(l.Cid, data, depth); err != nil {
				return err
			}
			continue
		}
	prefetch:
		for next < len(links) && links[next].Cid.Type() == cid.Raw {
			select {
			case wk.ahead <- struct{}{}:
			default:
				break prefetch
			}
			pending[next] = wk.start(links[next].Cid)
			next++
		}
		var data []byte
		var err error
		if f := pending[i]; f != nil {
			select {
			case <-f.done:
			case <-wk.ctx.Done():
				return wk.ctx.Err()
			}
			pending[i] = nil
			<-wk.ahead
			data, err = f.data, f.err
		} else {
			data, err = wk.g.Block(wk.ctx, l.Cid)
		}
		if err != nil {
			return err
		}
		if err := wk.node(l.Cid, data, depth); err != nil {
			return err
		}
	}
	return nil
}

func (wk *walker) start(c cid.Cid) *fetched {
	f := &fetched{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.data, f.err = wk.g.Block(wk.ctx, c)
	}()
	return f
}
