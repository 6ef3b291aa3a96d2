// Package upstream is the set of binary caches (an origin and its
// mirrors, serving the same content signed by the same key) that a
// substituter reads narinfos and fallback NARs from, with failover between
// them: a request goes to the live caches in turn until one has the file,
// a cache that fails is left out and probed in the background until it
// answers again. A cache is an http(s) base URL or a local directory
// (file://, opened through an os.Root).
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/metrics"
)

// Upstream orders (Options.Order).
const (
	// OrderPriority asks the upstreams in the order given: the origin
	// first, mirrors after it.
	OrderPriority = "priority"
	// OrderLatency asks the fastest upstream first, by the time its recent
	// answers took to arrive.
	OrderLatency = "latency"
)

// Defaults of the failover settings.
const (
	DefaultFailoverTimeout = 3 * time.Second
	DefaultProbeInterval   = 10 * time.Second
)

// maxCacheInfoSize bounds what a probe reads of nix-cache-info.
const maxCacheInfoSize = 64 << 10

// Options configure a Set. URLs is required.
type Options struct {
	// URLs are the caches, http://, https:// or file:///dir, asked in
	// this order (with OrderPriority): the origin first, then its mirrors.
	URLs []string
	// Order is OrderPriority (the default) or OrderLatency.
	Order string
	// FailoverTimeout bounds the wait for one cache's response headers
	// when another remains to be asked (default DefaultFailoverTimeout);
	// ProbeInterval is how often a down cache is probed (default
	// DefaultProbeInterval).
	FailoverTimeout time.Duration
	ProbeInterval   time.Duration
	// Client replaces the default HTTP client, which bounds the wait for
	// response headers at Timeout.
	Client  *http.Client
	Timeout time.Duration
	// Log receives a line when a cache goes down and comes back; nil logs
	// nothing.
	Log *zap.Logger
	// Registerer receives the nixipfs_substituter_upstream_up gauge; nil
	// registers none.
	Registerer prometheus.Registerer
}

// Set is the ordered set of caches that narinfos and fallback NARs
// come from. Every request goes to the live upstreams, one after the other,
// until one has the file: a transport failure, a timeout or a 5xx marks that
// upstream down and moves on; a 404 moves on without marking anything. A
// down upstream is left out of every request (unless all are down) and
// probed in the background until it answers again, so that a dead origin
// costs a client one short timeout (FailoverTimeout), once, not one per
// request.
//
// All upstreams must serve the same cache (the same narinfos, signed by the
// same key): a mirror's cache is byte-identical to the origin's, so a NAR
// URL learnt from one narinfo is valid on any of them.
type Set struct {
	desc    string // for logs: every upstream, comma-separated
	list    []*upState
	order   string
	timeout time.Duration // headers of one attempt, when another upstream remains
	probe   time.Duration
	log     *zap.Logger
	upGauge *prometheus.GaugeVec

	ctx    context.Context // ends the probes
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// upState is one upstream and what is known of its health.
type upState struct {
	*cache
	mu      sync.Mutex
	down    bool
	lastErr error
	latency time.Duration // moving average of the time to response headers; 0: not measured
	probing bool
}

// New opens the caches of opts (a file:// directory is opened now, an
// http one is not contacted). Close releases them.
func New(opts Options) (*Set, error) {
	raw := slices.Clone(opts.URLs)
	if len(raw) == 0 {
		return nil, errs.Errorf(errs.Invalid, "substituter: no upstream cache")
	}
	order := opts.Order
	switch order {
	case "":
		order = OrderPriority
	case OrderPriority, OrderLatency:
	default:
		return nil, errs.Errorf(errs.Invalid, "substituter: upstream order %q: want %s or %s", order, OrderPriority, OrderLatency)
	}
	u := &Set{order: order, timeout: opts.FailoverTimeout, probe: opts.ProbeInterval, log: opts.Log}
	if u.log == nil {
		u.log = zap.NewNop()
	}
	if u.timeout == 0 {
		u.timeout = DefaultFailoverTimeout
	}
	if u.probe <= 0 {
		u.probe = DefaultProbeInterval
	}
	var descs []string
	for _, r := range raw {
		up, err := newCache(r, opts.Client, opts.Timeout)
		if err != nil {
			u.Close()
			return nil, err
		}
		u.list = append(u.list, &upState{cache: up})
		descs = append(descs, up.desc)
	}
	u.desc = strings.Join(descs, ",")
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.upGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nixipfs_substituter_upstream_up",
		Help: "1 while an upstream cache answers, 0 while it is down and left out of requests (probed in the background).",
	}, []string{"upstream"})
	if opts.Registerer != nil {
		u.upGauge = metrics.Register(opts.Registerer, u.upGauge)
	}
	for _, s := range u.list {
		u.upGauge.WithLabelValues(s.desc).Set(1)
	}
	return u, nil
}

// String names every cache, comma-separated, for logs.
func (u *Set) String() string { return u.desc }

// Check reports whether raw is a cache URL New would accept, opening (and
// closing again) a file:// directory.
func Check(raw string) error {
	c, err := newCache(raw, &http.Client{}, 0)
	if err != nil {
		return err
	}
	c.close()
	return nil
}

// IsNotFound is what Nix itself reads as "not in this cache": S3 answers
// 403 for a missing key when listing is not allowed.
func IsNotFound(status int) bool {
	return status == http.StatusNotFound || status == http.StatusGone || status == http.StatusForbidden
}

// Close stops the probes, waits for them, and releases the directory of a
// file:// cache.
func (u *Set) Close() {
	if u.cancel != nil {
		u.cancel()
	}
	u.wg.Wait()
	for _, s := range u.list {
		s.cache.close()
	}
}

// candidates returns the upstreams to ask, in order: the live ones, or all
// of them when none is known to be live.
func (u *Set) candidates() []*upState {
	var live []*upState
	for _, s := range u.list {
		s.mu.Lock()
		if !s.down {
			live = append(live, s)
		}
		s.mu.Unlock()
	}
	if len(live) == 0 {
		return u.list
	}
	if u.order == OrderLatency && len(live) > 1 {
		lat := make(map[*upState]time.Duration, len(live))
		for _, s := range live {
			s.mu.Lock()
			lat[s] = s.latency
			s.mu.Unlock()
		}
		// Unmeasured (0) sorts first, so every upstream gets measured.
		slices.SortStableFunc(live, func(a, b *upState) int { return int(lat[a] - lat[b]) })
	}
	return live
}

// Get asks the candidates in turn; see upstreams. The first answer that is
// not a "not found" is returned; when every reachable upstream said "not
// found", the last such answer is; an error only when none answered.
func (u *Set) Get(ctx context.Context, method, rel, rawQuery string, hdr http.Header) (*Response, error) {
	cands := u.candidates()
	var notFound *Response
	var errList []error
	for _, s := range cands {
		if ctx.Err() != nil {
			break
		}
		resp, err := u.try(ctx, s, len(u.list) > 1, method, rel, rawQuery, hdr)
		if err != nil {
			errList = append(errList, err)
			continue
		}
		if IsNotFound(resp.Status) {
			resp.Body.Close()
			notFound = resp
			continue
		}
		return resp, nil
	}
	if notFound != nil {
		notFound.Body = http.NoBody
		return notFound, nil
	}
	if len(errList) == 0 {
		return nil, errs.E(errs.Transient, fmt.Errorf("upstream %s: %w", rel, ctx.Err()))
	}
	return nil, errs.E(errs.Transient, errors.Join(errList...))
}

// try asks one upstream. With bounded, the wait for response headers
// (connecting included) is cut at the failover timeout, so that a dead or
// hung upstream hands the request on quickly; the body is not bounded here
// (the callers' watchdogs bound its pauses).
func (u *Set) try(ctx context.Context, s *upState, bounded bool, method, rel, rawQuery string, hdr http.Header) (*Response, error) {
	start := time.Now()
	actx, cancel := context.WithCancel(ctx)
	var timedOut bool
	var timer *time.Timer
	var tmu sync.Mutex
	if bounded && u.timeout > 0 && s.root == nil {
		timer = time.AfterFunc(u.timeout, func() {
			tmu.Lock()
			timedOut = true
			tmu.Unlock()
			cancel()
		})
	}
	resp, err := s.get(actx, method, rel, rawQuery, hdr)
	if timer != nil {
		timer.Stop()
	}
	tmu.Lock()
	expired := timedOut
	tmu.Unlock()
	if err == nil && expired {
		resp.Body.Close()
		err = errors.New("timed out")
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, err
		}
		if expired {
			err = fmt.Errorf("upstream %s: no answer within the failover timeout of %v: %w", s.desc, u.timeout, err)
		}
		u.markDown(s, err)
		return nil, err
	}
	if resp.Status >= 500 {
		resp.Body.Close()
		cancel()
		err := fmt.Errorf("upstream %s: %s: HTTP %d", s.desc, rel, resp.Status)
		u.markDown(s, err)
		return nil, err
	}
	s.observe(time.Since(start))
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// observe folds one answer's latency into the moving average.
func (s *upState) observe(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latency == 0 {
		s.latency = d
	} else {
		s.latency = (s.latency*7 + d) / 8
	}
}

// markDown leaves s out of requests and starts probing it. With a single
// upstream there is nothing to fail over to: it stays in use.
func (u *Set) markDown(s *upState, err error) {
	if len(u.list) < 2 {
		return
	}
	s.mu.Lock()
	wasDown := s.down
	s.down, s.lastErr = true, err
	startProbe := !s.probing
	s.probing = true
	s.mu.Unlock()
	if !wasDown {
		u.upGauge.WithLabelValues(s.desc).Set(0)
		u.log.Warn("upstream down; asking the others until it answers again", zap.String("upstream", s.desc), zap.Error(err),
			zap.Duration("probe_every", u.probe))
	}
	if startProbe {
		u.wg.Add(1)
		go u.probeUntilUp(s)
	}
}

// probeUntilUp asks s for nix-cache-info every probe interval until it
// answers 200, then puts it back in use.
func (u *Set) probeUntilUp(s *upState) {
	defer u.wg.Done()
	t := time.NewTicker(u.probe)
	defer t.Stop()
	for {
		select {
		case <-u.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(u.ctx, max(u.timeout, time.Second))
		start := time.Now()
		resp, err := s.get(ctx, http.MethodGet, "nix-cache-info", "", nil)
		ok := err == nil && resp.Status == http.StatusOK
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, maxCacheInfoSize))
			resp.Body.Close()
		}
		cancel()
		if !ok {
			continue
		}
		s.mu.Lock()
		s.down, s.probing, s.lastErr = false, false, nil
		s.latency = time.Since(start)
		s.mu.Unlock()
		u.upGauge.WithLabelValues(s.desc).Set(1)
		u.log.Info("upstream answers again; back in use", zap.String("upstream", s.desc))
		return
	}
}
