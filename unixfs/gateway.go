package unixfs

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// DefaultPrefetch is how many leaf blocks a Gateway fetches ahead of the
// reader.
const DefaultPrefetch = 8

// Gateway reads UnixFS files from an IPFS HTTP gateway without trusting
// it (the trustless gateway protocol): it asks for the whole file as one
// CAR (?format=car&dag-scope=entity), or for every block separately as a
// raw block (application/vnd.ipld.raw), checks each block against the CID
// that names it, and walks the file's DAG itself (Open). Whatever the
// gateway does, the bytes Cat returns are the file the root CID names, or
// an error.
type Gateway struct {
	base     string // without a trailing slash
	client   *http.Client
	prefetch int
	// Blocks, if set, makes Cat ask for every block separately; by
	// default it asks for the whole file as one CAR first and checks
	// every block of it the same way, going block by block only where the
	// CAR goes wrong.
	Blocks bool
	log    *zap.Logger

	carFallbacks atomic.Int64
}

var _ Source = (*Gateway)(nil)

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

// Checks is CheckedBySource: Block checks every block it returns.
func (g *Gateway) Checks() Check { return CheckedBySource }

// Block fetches the block c and returns its bytes once they hash to c.
func (g *Gateway) Block(ctx context.Context, c cid.Cid) ([]byte, error) {
	if d, ok := identity(c); ok {
		// The bytes are the CID itself; nothing to fetch or trust.
		return d, nil
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
		return nil, errs.Errorf(blockStatusKind(resp.StatusCode), "gateway %s: block %s: HTTP %d", g.base, c, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBlockSize+1))
	if err != nil {
		return nil, errs.Errorf(errs.Transient, "gateway %s: block %s: %w", g.base, c, err)
	}
	if len(data) > MaxBlockSize {
		return nil, errs.Errorf(errs.Corrupt, "gateway %s: block %s: larger than %d bytes: %w", g.base, c, MaxBlockSize, ErrBlockMismatch)
	}
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "block %s: cannot hash with its CID's prefix: %w", c, err)
	}
	if !got.Equals(c) {
		return nil, errs.Errorf(errs.Corrupt, "gateway %s: block %s: got bytes hashing to %s: %w", g.base, c, got, ErrBlockMismatch)
	}
	return data, nil
}

// blockStatusKind is the kind of a gateway's answer to a block request: a
// block it does not have may come (NotYet); a gateway refusing raw blocks
// (403, 405, 406, 501) is the operator's to fix (Config); anything else
// may heal (Transient).
func blockStatusKind(code int) errs.Kind {
	switch code {
	case http.StatusNotFound, http.StatusGone:
		return errs.NotYet
	case http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusNotAcceptable, http.StatusNotImplemented:
		return errs.Config
	}
	return errs.Transient
}

// Cat streams the UnixFS file c in file order: from one CAR of its DAG,
// each block checked against its CID as it arrives, or block by block
// with a few leaf blocks fetched ahead (with Blocks set, or from where the
// CAR went wrong: truncated, a block other than the next one needed, a
// block that does not hash to its CID). Memory stays bounded by (prefetch +
// DAG depth) blocks of at most MaxBlockSize. Closing the reader stops the
// walk.
func (g *Gateway) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	opts := Options{Prefetch: g.prefetch}
	if _, id := identity(c); !g.Blocks && !id && (c.Type() == cid.Raw || c.Type() == cid.DagProtobuf) {
		cs, err := g.openCAR(ctx, c)
		if err != nil {
			if ctx.Err() == nil {
				g.carFallbacks.Add(1)
				g.log.Warn("gateway gave no usable CAR; fetching the NAR block by block", zap.String("gateway", g.base), zap.Error(err))
			}
		} else {
			opts.Seq = cs
		}
	}
	return Open(ctx, g, c, opts)
}
