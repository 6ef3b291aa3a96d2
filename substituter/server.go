package substituter

import (
	"context"
	"io"
	"net/http"
	"os"
	pathpkg "path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/bounded"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/ipfs/warm"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/peering"
	"github.com/nix-ipfs/nix-ipfs/storepath"
	"github.com/nix-ipfs/nix-ipfs/substituter/spool"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/upstream"
)

// IPFS is where NARs are read by CID: a kubo daemon (*ipfs.Reader, its
// block store, gateway or RPC cat; *ipfs.Kubo, RPC cat) or a trustless
// gateway (*unixfs.Gateway). What it returns is checked against the
// narinfo either way; an error or a stall makes the request fall back to
// upstream. A reader that is a unixfs.Sizer says the NAR's size before
// its bytes.
type IPFS interface {
	Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error)
}

var (
	_ IPFS = (*ipfs.Kubo)(nil)
	_ IPFS = (*ipfs.Reader)(nil)
	_ IPFS = (*unixfs.Gateway)(nil)
)

// Defaults for the zero values of Options.
const (
	DefaultNarinfoTTL      = 5 * time.Minute
	DefaultNegativeTTL     = 30 * time.Second
	DefaultIPFSTimeout     = 30 * time.Second
	DefaultUpstreamTimeout = 30 * time.Second
	DefaultMaxNarinfos     = 10000
	DefaultMaxNars         = 100000
	// DefaultPrefetchAhead is 16 rather than 4 for fan-out: with blocks
	// fetched in a random order (BlockFetchParallel), clients of one
	// network spread over more blocks when more NARs are in play at once,
	// and the mirror sent 1.65x a closure to six clients instead of 3.08x
	// with 4 (docs/BENCHMARKS.md, fan-out). PrefetchMaxBytes still bounds
	// the spool.
	DefaultPrefetchAhead = 16
	DefaultPrefetchBytes = 1 << 30
	DefaultPrefetchTTL   = 2 * time.Minute
	DefaultMaxVerified   = 100000
	DefaultKeepBytes     = 1 << 30
	DefaultKeepTTL       = 5 * time.Minute
	// DefaultBlockFetchParallel and DefaultBlockFetchStall: see
	// Options.BlockFetchParallel. Chosen with the bench's fan-out section
	// (docs/BENCHMARKS.md): with fewer blocks outstanding, more of them are
	// asked of the mirror by several clients at once.
	DefaultBlockFetchParallel = 128
	DefaultBlockFetchStall    = 2 * time.Second
)

// Size bounds of what is read from upstream into memory.
const (
	MaxNarinfoSize   = narinfo.MaxSize // 1 MiB
	MaxCacheInfoSize = 64 << 10
)

// Options configure a Server. Only Upstream (or Upstreams) and IPFS are
// required.
type Options struct {
	// Upstream is the binary cache whose narinfos are served and whose
	// NARs are the fallback: http://, https:// or file:///dir.
	Upstream string
	// Upstreams are more caches of the same content (mirrors), asked after
	// Upstream, in this order, when it is down or lacks a file; see
	// package upstream. UpstreamOrder, FailoverTimeout and ProbeInterval tune
	// the failover.
	Upstreams       []string
	UpstreamOrder   string
	FailoverTimeout time.Duration
	ProbeInterval   time.Duration
	// NarIndex, if set, names the narinfo (its request path,
	// "/<hashpart>.narinfo") of a NAR request path no served narinfo has
	// named yet, so that the NAR can still be checked and served from IPFS:
	// a mirror's own cache, which holds no NAR files, needs it.
	NarIndex func(narPath string) (narinfoPath string, ok bool)
	// IPFS serves NARs by their narinfo's IPFSHash.
	IPFS IPFS
	// Log receives a line per NAR (where it came from, and why) and every
	// failure. Nil logs nothing.
	Log *zap.Logger
	// Registerer receives the metrics (see metrics.go); nil registers none.
	Registerer prometheus.Registerer

	// NarinfoTTL is how long a narinfo (and nix-cache-info) is served from
	// memory; NegativeTTL the same for a 404. Zero means the default; a
	// negative value disables that cache.
	NarinfoTTL  time.Duration
	NegativeTTL time.Duration
	// IPFSTimeout is how long an IPFS fetch may go without receiving a
	// byte (the first one included) before it is abandoned for upstream.
	IPFSTimeout time.Duration
	// UpstreamTimeout bounds waiting for upstream response headers, a
	// whole narinfo, and any pause in a NAR body.
	UpstreamTimeout time.Duration
	// UpstreamClient replaces the default upstream HTTP client.
	UpstreamClient *http.Client

	// SpoolDir holds NARs read from IPFS while they are checked (default:
	// os.TempDir()). Files are unlinked as soon as they are created.
	SpoolDir string
	// MaxSpoolBytes bounds the disk used by NARs being checked at once;
	// a NAR that does not fit goes to upstream. Zero: unbounded.
	MaxSpoolBytes int64

	// MaxNarinfos bounds the narinfos kept in memory, MaxNars the
	// remembered NAR URLs (a few hundred bytes each).
	MaxNarinfos int
	MaxNars     int

	// PrefetchAhead is how many NARs may be read from IPFS ahead of their
	// request, started when their narinfo is served (zero: the default;
	// negative: no prefetch). PrefetchMaxBytes bounds their total size
	// (one NAR is always allowed), PrefetchTTL how long a prefetched NAR
	// waits for its request.
	PrefetchAhead    int
	PrefetchMaxBytes int64
	PrefetchTTL      time.Duration
	// MaxVerified bounds the remembered CIDs already proved to hold their
	// NAR (zero: the default; negative: remember none). A remembered CID
	// streams to the client as IPFS reads it.
	MaxVerified int
	// TrustedKeys are the publishers' keys (nix.conf's trusted-public-keys
	// syntax): a narinfo whose IPFSSig verifies under one of them names a
	// CID that streams on its first fetch, as a remembered one does
	// (trust.go). None: every CID is read and checked before it is sent,
	// until proved.
	TrustedKeys []signature.PublicKey
	// KeepBytes bounds the NARs kept, verified, in the spool after their
	// last request, so that the next request for one is sent from the
	// file without a read from IPFS (zero: the default; negative: keep
	// none); KeepTTL is how long one is kept.
	KeepBytes int64
	KeepTTL   time.Duration
	// BlockFetchParallel is how many blocks the kubo is asked for at once
	// (over all NARs) before a NAR is read, in a random order
	// (unixfs.Warmer), when IPFS can do so (a kubo Reader); zero: the
	// default; negative: none, the NAR is read in order as kubo fetches
	// it. BlockFetchStall is how long a block may stay outstanding, while
	// others arrive, before it is asked for again.
	BlockFetchParallel int
	BlockFetchStall    time.Duration
	// Peering keeps the kubo peered with the upstream's mirrors; it runs
	// from StartPeering (package peering).
	Peering peering.Options
}

// Server is the substituter's http.Handler. It is safe for concurrent use.
type Server struct {
	opts Options
	up   *upstream.Set
	ipfs IPFS
	warm *unixfs.Warmer // nil: NARs read in order only
	bf   *warm.Daemon   // a kubo Reader's warm; nil: NARs read in order only
	// lastBlock is when a block last arrived for any NAR's warm (Unix
	// nanoseconds): a fleet's client falls back to the mirrors when the
	// whole process gets nothing, not when one NAR waits its turn.
	lastBlock atomic.Int64
	fallback  func() // the peering's Fallback (a test's probe)
	log       *zap.Logger
	m         *metrics
	now       func() time.Time

	meta     *bounded.Map[string, *metaEntry] // request path -> nix-cache-info or narinfo
	nars     *bounded.Map[string, *narRef]    // NAR request path -> what it must match
	flight   singleflight.Group
	spools   *spool.Spool[*narRef]          // NARs being read from IPFS, or read and checked
	verified *bounded.Map[string, struct{}] // verifiedKey -> proved to hold that NAR
	refuted  *bounded.Map[string, struct{}] // verifiedKey -> signed, but found to hold other bytes
	peers    *peering.Peerer
}

// metaEntry is an upstream answer for nix-cache-info or a narinfo.
type metaEntry struct {
	status int    // 200 or 404
	body   []byte // as upstream sent it, for 200
	ref    *narRef
}

// narRef is what a NAR request is checked against, from its narinfo.
type narRef struct {
	key         string // request path, /nar/...
	storePath   string
	base        string   // store path basename
	references  []string // basenames
	compression string
	ipfsHash    string
	narHash     []byte // SHA-256 digest
	narSize     uint64
	// signed: an IPFSSig by a trusted key binds ipfsHash to this store
	// path, narHash and narSize (trust.go).
	signed bool
}

// spoolNAR is what the spool knows of ref's NAR, whose CID is c.
func (r *narRef) spoolNAR(c cid.Cid) spool.NAR {
	return spool.NAR{Key: r.key, StorePath: r.storePath, Base: r.base, References: r.references,
		CID: c, NarHash: r.narHash, NarSize: r.narSize}
}

// New checks opts and returns a Server. Close releases it. Only Upstream
// (or Upstreams) and IPFS are required.
func New(opts Options) (*Server, error) {
	if opts.IPFS == nil {
		return nil, errs.Errorf(errs.Invalid, "substituter: no IPFS client")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&opts.NarinfoTTL, DefaultNarinfoTTL)
	def(&opts.NegativeTTL, DefaultNegativeTTL)
	def(&opts.IPFSTimeout, DefaultIPFSTimeout)
	def(&opts.UpstreamTimeout, DefaultUpstreamTimeout)
	if opts.IPFSTimeout < 0 || opts.UpstreamTimeout < 0 {
		return nil, errs.Errorf(errs.Invalid, "substituter: negative timeout")
	}
	if opts.MaxNarinfos <= 0 {
		opts.MaxNarinfos = DefaultMaxNarinfos
	}
	if opts.MaxNars <= 0 {
		opts.MaxNars = DefaultMaxNars
	}
	if opts.PrefetchAhead == 0 {
		opts.PrefetchAhead = DefaultPrefetchAhead
	}
	if opts.PrefetchMaxBytes <= 0 {
		opts.PrefetchMaxBytes = DefaultPrefetchBytes
	}
	def(&opts.PrefetchTTL, DefaultPrefetchTTL)
	if opts.MaxVerified == 0 {
		opts.MaxVerified = DefaultMaxVerified
	}
	if opts.KeepBytes == 0 {
		opts.KeepBytes = DefaultKeepBytes
	}
	def(&opts.KeepTTL, DefaultKeepTTL)
	if opts.BlockFetchParallel == 0 {
		opts.BlockFetchParallel = DefaultBlockFetchParallel
	}
	def(&opts.BlockFetchStall, DefaultBlockFetchStall)
	if opts.SpoolDir == "" {
		opts.SpoolDir = os.TempDir()
	}
	// Created like the hook's spool: a fresh host needs no mkdir first.
	if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
		return nil, errs.Errorf(errs.Invalid, "substituter: NAR spool directory %q: %w", opts.SpoolDir, err)
	}
	if st, err := os.Stat(opts.SpoolDir); err != nil || !st.IsDir() {
		return nil, errs.Errorf(errs.Invalid, "substituter: NAR spool directory %q: not a directory (%v)", opts.SpoolDir, err)
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	urls := opts.Upstreams
	if opts.Upstream != "" {
		urls = append([]string{opts.Upstream}, urls...)
	}
	up, err := upstream.New(upstream.Options{URLs: urls, Order: opts.UpstreamOrder, FailoverTimeout: opts.FailoverTimeout,
		ProbeInterval: opts.ProbeInterval, Client: opts.UpstreamClient, Timeout: opts.UpstreamTimeout,
		Log: opts.Log, Registerer: opts.Registerer})
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts,
		up:   up,
		ipfs: opts.IPFS,
		log:  opts.Log,
		m:    newMetrics(opts.Registerer),
		now:  time.Now,
		meta: bounded.New[string, *metaEntry](opts.MaxNarinfos),
		nars: bounded.New[string, *narRef](opts.MaxNars),
		// A bounded map of at most zero entries holds nothing.
		verified: bounded.New[string, struct{}](max(opts.MaxVerified, 0)),
		refuted:  bounded.New[string, struct{}](maxRefuted),
	}
	if opts.BlockFetchParallel > 0 {
		s.warm = &unixfs.Warmer{Parallel: opts.BlockFetchParallel, Stall: opts.BlockFetchStall}
		if r, ok := opts.IPFS.(*ipfs.Reader); ok {
			s.bf = warm.New(r)
		}
	}
	s.spools = spool.New(spool.Options[*narRef]{
		MaxBytes:         opts.MaxSpoolBytes,
		PrefetchAhead:    opts.PrefetchAhead,
		PrefetchMaxBytes: opts.PrefetchMaxBytes,
		PrefetchTTL:      opts.PrefetchTTL,
		KeepBytes:        opts.KeepBytes,
		KeepTTL:          opts.KeepTTL,
		Fetch:            s.fetch,
		Trust: func(n spool.NAR, ref *narRef) string {
			how, _ := s.trust(n.CID, ref)
			return how
		},
		// Read at each call: a test sets s.now after New.
		Now:        func() time.Time { return s.now() },
		Log:        opts.Log,
		Prefetches: s.m.prefetches,
		KeptHits:   s.m.keptHits,
	})
	s.peers = peering.New(opts.Peering, up, opts.Log, opts.Registerer, opts.UpstreamTimeout)
	s.fallback = s.peers.Fallback
	if s.warm != nil {
		// A fleet's client on a LAN asks a block at a time (see
		// unixfs.Warmer's Lists).
		s.warm.Lists = func() bool { return !s.peers.OnLAN() }
	}
	return s, nil
}

// StartPeering peers the substituter's kubo with the mirrors of its
// upstream cache (package peering): once now, returning when that round is
// done or after 15 s, then every Refresh until ctx is done. The returned
// function waits for the loop to end.
func (s *Server) StartPeering(ctx context.Context) (wait func()) { return s.peers.Start(ctx) }

// MirrorPeers returns the peers the last peering round gave kubo.
func (s *Server) MirrorPeers() []mirrorlist.Peer { return s.peers.Peers() }

// Close ends the reads from IPFS (they run on a context of the spool's,
// not a request's) and the spool's timers, waits for them, drops the NARs
// kept for a next request, then stops probing upstreams and releases the
// directory of a file:// upstream. Requests still being answered keep
// their files until they end.
func (s *Server) Close() error {
	s.spools.Close()
	s.up.Close()
	return nil
}

// Upstream is the upstream cache, for logs.
func (s *Server) Upstream() string { return s.up.String() }

// ServeHTTP answers GET and HEAD of the cache's paths; see the package
// comment for what is refused.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.m.rejected.WithLabelValues("405").Inc()
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	k, code := classify(r)
	switch k {
	case kindCacheInfo:
		s.serveMeta(w, r, "cache_info", MaxCacheInfoSize, "text/x-nix-cache-info")
	case kindNarinfo:
		s.serveMeta(w, r, "narinfo", MaxNarinfoSize, "text/x-nix-narinfo")
	case kindNar:
		s.serveNar(w, r)
	case kindMirrorList:
		// Passed on as upstream has it, so a substituter (or a mirror's
		// cache) can be another's upstream.
		s.serveMeta(w, r, "mirror_list", mirrorlist.MaxSize, "application/json")
	case kindLatest:
		// A job's latest-build document, passed on as upstream has it
		// (for at most NarinfoTTL): the reader checks its signature.
		s.serveMeta(w, r, "latest", events.MaxLatestDocument, "application/json")
	default:
		s.m.rejected.WithLabelValues(strconv.Itoa(code)).Inc()
		s.log.Debug("request refused", zap.String("path", r.URL.EscapedPath()), zap.Int("status", code))
		http.Error(w, http.StatusText(code), code)
	}
}

func (s *Server) serveMeta(w http.ResponseWriter, r *http.Request, what string, limit int64, ctype string) {
	path := r.URL.Path
	e, result, err := s.lookupMeta(r.Context(), path, what, limit)
	if what == "narinfo" {
		s.m.narinfos.WithLabelValues(result).Inc()
	}
	if err != nil {
		s.log.Warn("upstream "+what+" failed", zap.String("path", path), zap.String("upstream", s.up.String()), zap.Error(err))
		http.Error(w, "upstream cache failed", http.StatusBadGateway)
		return
	}
	if e.status != http.StatusOK {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if e.ref != nil {
		// Remembered again at every hit, so an entry the NAR table
		// evicted comes back while Nix still uses the narinfo.
		s.nars.Put(e.ref.key, e.ref, time.Time{})
		if r.Method == http.MethodGet {
			s.prefetch(e.ref)
		}
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(e.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(e.body)
	}
}

// lookupMeta returns the cached answer for path, or fetches it once however
// many requests wait for it. result is the narinfos metric's label.
func (s *Server) lookupMeta(ctx context.Context, path, what string, limit int64) (*metaEntry, string, error) {
	if e, ok := s.meta.Get(path, s.now()); ok {
		if e.status == http.StatusOK {
			return e, "hit", nil
		}
		return e, "negative_hit", nil
	}
	v, err, _ := s.flight.Do(path, func() (any, error) {
		// Detached from the first caller: its going away must not fail
		// the others waiting on the same fetch.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.UpstreamTimeout)
		defer cancel()
		return s.fetchMeta(ctx, path, what, limit)
	})
	if err != nil {
		return nil, "error", err
	}
	e := v.(*metaEntry)
	if e.status == http.StatusOK {
		return e, "fetched", nil
	}
	return e, "not_found", nil
}

func (s *Server) fetchMeta(ctx context.Context, path, what string, limit int64) (*metaEntry, error) {
	resp, err := s.up.Get(ctx, http.MethodGet, path[1:], "", nil)
	if err != nil {
		s.m.upstreamStatus(what, 0, err)
		return nil, err
	}
	defer resp.Body.Close()
	s.m.upstreamStatus(what, resp.Status, nil)
	now := s.now()
	switch {
	case resp.Status == http.StatusOK:
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return nil, errs.Errorf(errs.Transient, "upstream %s: reading %s: %w", s.up.String(), path, err)
		}
		if int64(len(body)) > limit {
			return nil, errs.Errorf(errs.Invalid, "upstream %s: %s is larger than %d bytes", s.up.String(), path, limit)
		}
		e := &metaEntry{status: http.StatusOK, body: body}
		if what == "narinfo" {
			e.ref = s.parseRef(path, body)
		}
		if s.opts.NarinfoTTL > 0 {
			s.meta.Put(path, e, now.Add(s.opts.NarinfoTTL))
		}
		return e, nil
	case upstream.IsNotFound(resp.Status):
		e := &metaEntry{status: http.StatusNotFound}
		if s.opts.NegativeTTL > 0 {
			s.meta.Put(path, e, now.Add(s.opts.NegativeTTL))
		}
		return e, nil
	default:
		return nil, errs.Errorf(errs.Transient, "upstream %s: %s: HTTP %d", s.up.String(), path, resp.Status)
	}
}

// resolveNar finds the narinfo of a NAR request that no served narinfo
// named (a client that cached the narinfo across this server's restart),
// through Options.NarIndex, and registers it as if served.
func (s *Server) resolveNar(ctx context.Context, key string) (*narRef, bool) {
	if s.opts.NarIndex == nil {
		return nil, false
	}
	np, ok := s.opts.NarIndex(key)
	if !ok {
		return nil, false
	}
	e, _, err := s.lookupMeta(ctx, np, "narinfo", MaxNarinfoSize)
	if err != nil || e.ref == nil || e.ref.key != key {
		return nil, false
	}
	s.nars.Put(key, e.ref, time.Time{})
	return e.ref, true
}

// parseRef extracts what the narinfo's NAR must match. A narinfo this
// server cannot vouch for is still served as it is (Nix decides about it),
// but its NAR is then only proxied.
func (s *Server) parseRef(path string, body []byte) *narRef {
	log := s.log.With(zap.String("path", path))
	ni, err := narinfo.ParseBytes(body)
	if err != nil {
		log.Warn("narinfo does not parse; its NAR will be proxied unchecked", zap.Error(err))
		return nil
	}
	log = log.With(zap.String("store_path", ni.StorePath))
	if hp := strings.TrimSuffix(path[1:], ".narinfo"); storepath.HashPart(ni.StorePath) != hp {
		log.Warn("narinfo is for another store path; its NAR will be proxied unchecked")
		return nil
	}
	key, ok := narKey(ni.URL)
	if !ok {
		log.Warn("narinfo URL is not one this substituter serves", zap.String("url", ni.URL))
		return nil
	}
	nix32, err := ni.NarHashNix32()
	if err != nil {
		log.Warn("narinfo NarHash unusable; its NAR will be proxied unchecked", zap.Error(err))
		return nil
	}
	digest, err := nixbase32.DecodeString(strings.TrimPrefix(nix32, "sha256:"))
	if err != nil || len(digest) != 32 {
		log.Warn("narinfo NarHash unusable; its NAR will be proxied unchecked", zap.String("nar_hash", ni.NarHash))
		return nil
	}
	return &narRef{
		key:         key,
		storePath:   ni.StorePath,
		base:        pathpkg.Base(ni.StorePath),
		references:  ni.References,
		compression: ni.Compression,
		ipfsHash:    strings.TrimSpace(ni.IPFSHash),
		narHash:     digest,
		narSize:     ni.NarSize,
		signed:      s.cidSigned(log, ni),
	}
}
