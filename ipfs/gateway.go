package ipfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs/kuboerr"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// GatewayOff, given as a Reader's gateway address, makes it read through
// RPC cat only.
const GatewayOff = "off"

// Reader reads unixfs files from one kubo daemon: through the daemon's own
// HTTP gateway (GET /ipfs/<cid>) when it has a usable one, through RPC cat
// (Kubo.Cat) otherwise. Both are the same daemon doing the same work (it
// checks every block it fetches from peers against its CID, and fetches
// what it lacks), but kubo 0.42 streams a file through its gateway for
// about half the CPU of its RPC cat (1 GiB of local blocks: 1.25 CPU-s and
// 0.9 s against 2.7 CPU-s and 2.2 s), which is what limits a reader on a
// small machine.
//
// The gateway is found (in order): the address given to NewReader; the
// gateway file kubo writes next to its api file ($IPFS_PATH/gateway), when
// the daemon's API address came from that repository or matches its api
// file; the daemon's Addresses.Gateway (over RPC), unless it is a random
// port. A gateway is used only if the daemon's Gateway.NoFetch is not set
// (with it, the gateway would not fetch missing blocks from peers, which
// cat does) and it answers a probe; otherwise Cat uses RPC cat and the
// reason is logged. A gateway that stops answering (a daemon restarted on
// another random port) is looked for again.
//
// A read that breaks off mid-stream continues with a Range request from
// the offset reached, at most maxResumes times per file (unixfs.Resumer).
//
// A Reader is a unixfs.Streamer: blocks through RPC, whole files from an
// offset through the gateway or cat.
type Reader struct {
	k        *Kubo
	explicit string
	log      *zap.Logger

	mu    sync.Mutex
	gw    *gateway // nil: RPC cat
	why   string   // why not a gateway, when gw is nil
	found time.Time
	said  string // the last state logged, to log changes only

	resumes atomic.Int64

	// The daemon's block store, read straight when it is on this
	// machine (unixfs.FlatFS): set by UseBlockStore.
	blocksOn   bool
	blocksRepo string // "": the daemon's own repository, found
	blocksOnce sync.Once
	blocks     *unixfs.FlatFS
}

// gateway is a kubo gateway found usable.
type gateway struct {
	base   string // URL before /ipfs/
	addr   string // for messages: the URL, or /unix/<path>
	from   string // where the address came from, for the log
	client *http.Client
}

const (
	// rediscoverEvery is how often a Reader without a gateway looks for
	// one again, and the least time between two searches after a gateway
	// stopped answering.
	rediscoverEvery = time.Minute
	rediscoverLost  = 5 * time.Second
	probeTimeout    = 10 * time.Second
	maxResumes      = 3
	// probeCID is the identity CID of the empty raw block: any gateway
	// serves it from the CID alone, without a block store or peers.
	probeCID = "bafkqaaa"
)

// NewReader returns a Reader of k's files. gateway is the daemon's gateway
// address (an http URL, host:port or multiaddr), "" to find it, or
// GatewayOff. log receives the choice between gateway and RPC cat, and its
// reason; nil logs nothing. Nothing is contacted until the first Cat or
// Discover.
func NewReader(k *Kubo, gateway string, log *zap.Logger) (*Reader, error) {
	gateway = strings.TrimSpace(gateway)
	if gateway != "" && gateway != GatewayOff {
		if _, err := resolve(gateway); err != nil {
			return nil, errs.Errorf(errs.Invalid, "kubo gateway: %w", err)
		}
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Reader{k: k, explicit: gateway, log: log}, nil
}

// UseBlockStore makes the Reader read files straight from the daemon's
// flatfs block store when it holds every block (unixfs.FlatFS), and through the
// daemon otherwise, from the offset reached. repo is the daemon's
// repository, or "" for the one whose api file names the daemon (found
// as the gateway file is). If the store cannot be read, the reason is
// logged at the first read, and the daemon serves every read.
func (r *Reader) UseBlockStore(repo string) {
	r.blocksOn, r.blocksRepo = true, repo
}

// BlockStore is the block store read straight, or nil and why not.
func (r *Reader) BlockStore() (*unixfs.FlatFS, string) {
	if !r.blocksOn {
		return nil, "not asked for"
	}
	r.blocksOnce.Do(func() {
		repo := r.blocksRepo
		if repo == "" && r.k != nil {
			repo = r.k.repoDir()
		}
		if repo == "" {
			r.log.Info("not reading kubo's block store directly: the daemon's repository is not on this machine (or its api file names another address)",
				zap.String("kubo_api", r.k.String()))
			return
		}
		fs, err := unixfs.OpenFlatFS(repo)
		if err != nil {
			r.log.Info("not reading kubo's block store directly", zap.String("kubo_api", r.k.String()), zap.Error(err))
			return
		}
		r.blocks = fs
		r.log.Info("reading blocks straight from kubo's block store", zap.String("kubo_api", r.k.String()), zap.String("blocks", fs.Dir()))
	})
	if r.blocks == nil {
		return nil, "unusable (logged)"
	}
	return r.blocks, ""
}

// String names the daemon, for logs.
func (r *Reader) String() string { return r.k.String() }

// Kubo is the daemon's RPC client.
func (r *Reader) Kubo() *Kubo { return r.k }

// Resumes is how many reads broke off mid-stream and continued with a
// Range request.
func (r *Reader) Resumes() int64 { return r.resumes.Load() }

// Discover looks for the daemon's gateway now, and returns its address, or
// "" and why RPC cat is used instead.
func (r *Reader) Discover(ctx context.Context) (gateway, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.discoverLocked(ctx)
	if r.gw != nil {
		return r.gw.addr, ""
	}
	return "", r.why
}

// Gateway is the gateway in use, or "" while reads go through RPC cat.
func (r *Reader) Gateway() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gw == nil {
		return ""
	}
	return r.gw.addr
}

func (r *Reader) current(ctx context.Context) *gateway {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gw == nil && (r.found.IsZero() || time.Since(r.found) >= rediscoverEvery) {
		r.discoverLocked(ctx)
	}
	return r.gw
}

// lost forgets g after it failed to answer, so that the next read looks
// for the gateway again (soon, not at once: the daemon may be restarting).
func (r *Reader) lost(g *gateway, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gw != g {
		return
	}
	r.gw = nil
	r.why = fmt.Sprintf("gateway %s stopped answering: %v", g.addr, err)
	r.found = time.Now().Add(rediscoverLost - rediscoverEvery)
	r.say()
}

func (r *Reader) say() {
	state := "rpc " + r.why
	if r.gw != nil {
		state = "gateway " + r.gw.addr
	}
	if state == r.said {
		return
	}
	r.said = state
	if r.gw != nil {
		r.log.Info("reading from kubo through its gateway", zap.String("kubo_api", r.k.String()),
			zap.String("gateway", r.gw.addr), zap.String("found_in", r.gw.from))
		return
	}
	r.log.Warn("not reading through kubo's gateway; using RPC cat (slower, more CPU)",
		zap.String("kubo_api", r.k.String()), zap.String("reason", r.why))
}

func (r *Reader) discoverLocked(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	r.found = time.Now()
	r.gw, r.why = nil, ""
	defer r.say()
	if r.explicit == GatewayOff {
		r.why = "--kubo-gateway=off"
		return
	}

	// What the daemon's gateway does with missing blocks, first: with
	// NoFetch it would answer 404 where cat fetches from peers.
	var conf struct {
		Value struct {
			NoFetch               bool
			DeserializedResponses *bool
		}
	}
	if err := r.k.api.Request("config", "Gateway").Exec(ctx, &conf); err != nil {
		err = r.k.fail(ctx, err, "config Gateway")
		r.why = fmt.Sprintf("cannot read the daemon's Gateway config: %v", err)
		if errs.Is(err, errs.Transient) {
			// A daemon not up yet: look again soon.
			r.found = time.Now().Add(rediscoverLost - rediscoverEvery)
		}
		return
	}
	if conf.Value.NoFetch {
		r.why = "the daemon's Gateway.NoFetch is true: its gateway would not fetch missing blocks from peers, as cat does"
		return
	}
	if d := conf.Value.DeserializedResponses; d != nil && !*d {
		r.why = "the daemon's Gateway.DeserializedResponses is false: its gateway serves no files"
		return
	}

	type candidate struct {
		ep   endpoint
		from string
	}
	var cands []candidate
	var whys []string
	if r.explicit != "" {
		ep, err := resolve(r.explicit)
		if err != nil {
			r.why = err.Error()
			return
		}
		cands = append(cands, candidate{ep, "--kubo-gateway"})
	} else {
		if repo := r.k.repoDir(); repo != "" {
			file := filepath.Join(repo, "gateway")
			b, err := os.ReadFile(file)
			switch {
			case errors.Is(err, os.ErrNotExist):
				// No gateway, or not up yet: Addresses.Gateway says.
			case err != nil:
				whys = append(whys, err.Error())
			default:
				if ep, err := resolve(strings.TrimSpace(string(b))); err != nil {
					whys = append(whys, fmt.Sprintf("%s: %v", file, err))
				} else {
					cands = append(cands, candidate{ep, file})
				}
			}
		}
		eps, err := r.k.configGateways(ctx)
		if err != nil {
			whys = append(whys, err.Error())
		}
		for _, ep := range eps {
			cands = append(cands, candidate{ep, "Addresses.Gateway"})
		}
	}
	for _, c := range cands {
		g := newGateway(c.ep, c.from)
		if err := g.probe(ctx); err != nil {
			whys = append(whys, err.Error())
			continue
		}
		r.gw = g
		return
	}
	if len(whys) == 0 {
		whys = append(whys, "the daemon has no gateway (Addresses.Gateway is empty)")
	}
	r.why = strings.Join(whys, "; ")
}

// repoDir is the repository whose api file names k's address, if there is
// one on this machine: its gateway file then names the same daemon's
// gateway.
func (k *Kubo) repoDir() string {
	if k.ep.repo != "" {
		return k.ep.repo
	}
	ep, err := resolveRepo()
	if err != nil || ep.url != k.ep.url || ep.unix != k.ep.unix {
		return ""
	}
	return ep.repo
}

// configGateways reads the daemon's Addresses.Gateway (one multiaddr or a
// list). An unspecified host (0.0.0.0) becomes the API's host; a random
// port (tcp/0) cannot be known this way and is left out.
func (k *Kubo) configGateways(ctx context.Context) ([]endpoint, error) {
	var out struct{ Value json.RawMessage }
	if err := k.api.Request("config", "Addresses.Gateway").Exec(ctx, &out); err != nil {
		return nil, k.fail(ctx, err, "config Addresses.Gateway")
	}
	var addrs []string
	var one string
	if err := json.Unmarshal(out.Value, &one); err == nil {
		addrs = []string{one}
	} else if err := json.Unmarshal(out.Value, &addrs); err != nil {
		return nil, fmt.Errorf("kubo %s: Addresses.Gateway %s: %w", k.addr, out.Value, err)
	}
	var eps []endpoint
	var whys []string
	for _, a := range addrs {
		ep, err := resolveMultiaddr(a, "Addresses.Gateway")
		if err != nil {
			whys = append(whys, err.Error())
			continue
		}
		if ep.unix == "" {
			scheme, hostport, _ := strings.Cut(ep.url, "://")
			host, port, err := net.SplitHostPort(hostport)
			if err != nil {
				continue
			}
			if port == "0" {
				whys = append(whys, fmt.Sprintf("Addresses.Gateway %s is a random port (give the gateway address, or read $IPFS_PATH/gateway on the daemon's machine)", a))
				continue
			}
			if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
				host = "127.0.0.1"
				if k.ep.unix == "" {
					if _, apiHostPort, ok := strings.Cut(k.ep.url, "://"); ok {
						if h, _, err := net.SplitHostPort(apiHostPort); err == nil {
							host = h
						}
					}
				}
				ep.url = scheme + "://" + net.JoinHostPort(host, port)
			}
		}
		eps = append(eps, ep)
	}
	if len(eps) == 0 && len(whys) > 0 {
		return nil, errors.New(strings.Join(whys, "; "))
	}
	return eps, nil
}

func newGateway(ep endpoint, from string) *gateway {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSHandshakeTimeout: dialTimeout,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
		// The default (4 KiB) read buffer is bypassed by a reader's
		// larger reads: the body goes straight into the caller's buffer.
	}
	addr := ep.dialVia(tr, d)
	return &gateway{base: strings.TrimSuffix(ep.url, "/"), addr: addr, from: from, client: &http.Client{Transport: tr}}
}

// probe checks that g is an IPFS gateway serving files.
func (g *gateway) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+"/ipfs/"+probeCID, nil)
	if err != nil {
		return fmt.Errorf("gateway %s (from %s): %w", g.addr, g.from, err)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return fmt.Errorf("gateway %s (from %s): %w", g.addr, g.from, err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK || n != 0 {
		return fmt.Errorf("gateway %s (from %s): GET /ipfs/%s: HTTP %d, %d bytes, not an IPFS gateway serving files", g.addr, g.from, probeCID, resp.StatusCode, n)
	}
	return nil
}

// Cat streams the unixfs file c, like Kubo.Cat: blocks missing locally are
// fetched from peers as the reader reaches them; ctx bounds the whole read.
// With the block store in use, the file is walked there (unixfs.Open) and
// the daemon reads on from the first block the store lacks (a
// unixfs.Resumer). The reader is a unixfs.Sizer when the file's size is
// known before its bytes (the block store's root, the gateway's
// Content-Length).
func (r *Reader) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	if err := needCID("cat", c); err != nil {
		return nil, err
	}
	if fs, _ := r.BlockStore(); fs != nil {
		f, err := fs.Open(ctx, c)
		if err == nil {
			size := f.Size()
			return unixfs.NewResumer(f, 0, size, 1, "kubo", func(off int64, cause error) (io.ReadCloser, error) {
				if ctx.Err() != nil {
					return nil, nil
				}
				// A block the store lacks (not pinned here, or
				// collected since) or cannot give: the daemon, which
				// fetches from peers, reads the rest.
				r.log.Info("block store read stopped; kubo reads the rest", zap.String("cid", c.String()), zap.Int64("offset", off), zap.Error(cause))
				return r.catFrom(ctx, c, off, size)
			}), nil
		}
		if !errors.Is(err, unixfs.ErrNotLocal) {
			r.log.Info("block store read failed; kubo reads the file", zap.String("cid", c.String()), zap.Error(err))
		}
	}
	return r.catFrom(ctx, c, 0, -1)
}

// Stream reads the unixfs file c from byte off through the daemon (its
// gateway, else RPC cat).
func (r *Reader) Stream(ctx context.Context, c cid.Cid, off int64) (io.ReadCloser, error) {
	if err := needCID("cat", c); err != nil {
		return nil, err
	}
	return r.catFrom(ctx, c, off, -1)
}

// Block returns the block c through the daemon's RPC (Kubo.Block).
func (r *Reader) Block(ctx context.Context, c cid.Cid) ([]byte, error) { return r.k.Block(ctx, c) }

// Checks is the daemon's: see Kubo.Checks.
func (r *Reader) Checks() unixfs.Check { return r.k.Checks() }

// catFrom reads c through the daemon from byte off (its gateway, else RPC
// cat with the first off bytes skipped). size is the file's size, if
// known, or -1.
func (r *Reader) catFrom(ctx context.Context, c cid.Cid, off, size int64) (io.ReadCloser, error) {
	if off > 0 {
		if g := r.current(ctx); g != nil {
			if b, err := r.gatewayRead(ctx, g, c, off, size); err == nil {
				return b, nil
			}
		}
		return r.k.Stream(ctx, c, off)
	}
	g := r.current(ctx)
	if g == nil {
		return r.k.Cat(ctx, c)
	}
	b, err := r.gatewayRead(ctx, g, c, 0, -1)
	if err == nil {
		return b, nil
	}
	var se *statusError
	isStatus := errors.As(err, &se)
	switch {
	case ctx.Err() != nil:
		return nil, err
	case isStatus && se.rpcMayServe():
		// Not here (a daemon with NoFetch set since we looked), or
		// refused as a file: cat, which fetches, decides.
		if se.code != http.StatusNotFound && se.code != http.StatusGone {
			r.lost(g, err)
		}
		return r.k.Cat(ctx, c)
	case !isStatus && errs.Is(err, errs.Transient):
		// The gateway did not answer (a daemon restarted on another
		// port): cat, and look for the gateway again.
		r.lost(g, err)
		return r.k.Cat(ctx, c)
	}
	return nil, err
}

// gatewayRead reads c from g from byte off; a stream that breaks off
// continues with a Range request from the offset reached, at most
// maxResumes times.
func (r *Reader) gatewayRead(ctx context.Context, g *gateway, c cid.Cid, off, size int64) (io.ReadCloser, error) {
	first, err := g.open(ctx, c, off, size)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		size = first.size
	}
	return unixfs.NewResumer(first, off, size, maxResumes, "resuming", func(at int64, cause error) (io.ReadCloser, error) {
		if ctx.Err() != nil {
			return nil, nil
		}
		// Broken off mid-stream (kubo cut the connection, or was
		// restarted): continue from where it stopped.
		rest, err := g.open(ctx, c, at, size)
		if err != nil {
			return nil, err
		}
		r.resumes.Add(1)
		r.log.Info("kubo gateway read broke off; resumed with a Range request",
			zap.String("cid", c.String()), zap.Int64("offset", at), zap.Error(cause))
		return rest, nil
	}), nil
}

// statusError is a gateway's answer other than the one wanted.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	if e.msg == "" {
		return "HTTP " + strconv.Itoa(e.code)
	}
	return fmt.Sprintf("HTTP %d: %s", e.code, e.msg)
}

// rpcMayServe reports an answer after which RPC cat may still succeed: the
// gateway lacks the content without looking for it (404, 410: NoFetch),
// or refuses to serve files (403, 405, 406, 501: DeserializedResponses off,
// or not a kubo gateway at all).
func (e *statusError) rpcMayServe() bool {
	switch e.code {
	case http.StatusNotFound, http.StatusGone, http.StatusForbidden, http.StatusMethodNotAllowed,
		http.StatusNotAcceptable, http.StatusNotImplemented:
		return true
	}
	return false
}

// gatewayBody is one response of a gateway for a file, from byte off; its
// errors are classified as Kubo.fail does.
type gatewayBody struct {
	ctx  context.Context
	g    *gateway
	c    cid.Cid
	body io.ReadCloser
	off  int64 // the file's offset reached
	size int64 // the file's size, -1 while unknown
}

// open asks g for c from byte off; size is the file's size if known (a
// Range answer must agree), or -1.
func (g *gateway) open(ctx context.Context, c cid.Cid, off, size int64) (*gatewayBody, error) {
	b := &gatewayBody{ctx: ctx, g: g, c: c, off: off, size: size}
	u := g.base + "/ipfs/" + c.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "kubo gateway %s: cat %s: %w", g.addr, c, err)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, b.fail(err)
	}
	want := http.StatusOK
	if off > 0 {
		want = http.StatusPartialContent
	}
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		se := &statusError{code: resp.StatusCode, msg: strings.TrimSpace(string(msg))}
		return nil, errs.Errorf(statusKind(se.code), "kubo gateway %s: cat %s from byte %d: %w", g.addr, c, off, se)
	}
	if off > 0 {
		// "bytes <first>-<last>/<size>"
		cr := resp.Header.Get("Content-Range")
		start, total, ok := parseContentRange(cr)
		if !ok || start != off || (size >= 0 && total != size) {
			resp.Body.Close()
			return nil, errs.Errorf(errs.Transient, "kubo gateway %s: cat %s from byte %d: answered Content-Range %q", g.addr, c, off, cr)
		}
		b.size = total
	} else if resp.ContentLength >= 0 {
		b.size = resp.ContentLength
	}
	b.body = resp.Body
	return b, nil
}

func (b *gatewayBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.off += int64(n)
	if err != nil && err != io.EOF {
		err = b.fail(err)
	}
	return n, err
}

func (b *gatewayBody) Close() error { return b.body.Close() }

// fail classifies a transport error as Kubo.fail does.
func (b *gatewayBody) fail(err error) error {
	if cerr := b.ctx.Err(); cerr != nil {
		return fmt.Errorf("kubo gateway %s: cat %s: %w (%v)", b.g.addr, b.c, cerr, err)
	}
	if errs.Classified(err) {
		return err
	}
	if kuboerr.Unreachable(err) {
		return errs.Errorf(errs.Transient, "kubo gateway %s unreachable: cat %s at byte %d: %w", b.g.addr, b.c, b.off, err)
	}
	return errs.Errorf(errs.Transient, "kubo gateway %s: cat %s at byte %d: %w", b.g.addr, b.c, b.off, err)
}

// statusKind is the kind of a gateway's HTTP status, as kuboerr.Kind is of an
// RPC answer: a bad request is Invalid; a gateway that refuses files is the
// operator's to fix (Config); anything else may heal.
func statusKind(code int) errs.Kind {
	switch code {
	case http.StatusBadRequest:
		return errs.Invalid
	case http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusNotAcceptable, http.StatusNotImplemented:
		return errs.Config
	}
	return errs.Transient
}

func parseContentRange(s string) (start, size int64, ok bool) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, false
	}
	rng, total, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, false
	}
	first, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	size, err2 := strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return start, size, true
}
