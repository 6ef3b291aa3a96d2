package substituter

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
)

// Upstream orders (Options.UpstreamOrder).
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

// upstreams is the ordered set of caches that narinfos and fallback NARs
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
type upstreams struct {
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
	*upstream
	mu      sync.Mutex
	down    bool
	lastErr error
	latency time.Duration // moving average of the time to response headers; 0: not measured
	probing bool
}

func newUpstreams(opts Options, log *zap.Logger, reg prometheus.Registerer) (*upstreams, error) {
	raw := slices.Clone(opts.Upstreams)
	if opts.Upstream != "" {
		raw = append([]string{opts.Upstream}, raw...)
	}
	if len(raw) == 0 {
		return nil, errs.Errorf(errs.Invalid, "substituter: no upstream cache")
	}
	order := opts.UpstreamOrder
	switch order {
	case "":
		order = OrderPriority
	case OrderPriority, OrderLatency:
	default:
		return nil, errs.Errorf(errs.Invalid, "substituter: upstream order %q: want %s or %s", order, OrderPriority, OrderLatency)
	}
	u := &upstreams{order: order, timeout: opts.FailoverTimeout, probe: opts.ProbeInterval, log: log}
	if u.timeout == 0 {
		u.timeout = DefaultFailoverTimeout
	}
	if u.probe <= 0 {
		u.probe = DefaultProbeInterval
	}
	var descs []string
	for _, r := range raw {
		up, err := newUpstream(r, opts.UpstreamClient, opts.UpstreamTimeout)
		if err != nil {
			u.close()
			return nil, err
		}
		u.list = append(u.list, &upState{upstream: up})
		descs = append(descs, up.desc)
	}
	u.desc = strings.Join(descs, ",")
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.upGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nixipfs_substituter_upstream_up",
		Help: "1 while an upstream cache answers, 0 while it is down and left out of requests (probed in the background).",
	}, []string{"upstream"})
	if reg != nil {
		if err := reg.Register(u.upGauge); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				u.upGauge = are.ExistingCollector.(*prometheus.GaugeVec)
			}
		}
	}
	for _, s := range u.list {
		u.upGauge.WithLabelValues(s.desc).Set(1)
	}
	return u, nil
}

func (u *upstreams) close() {
	if u.cancel != nil {
		u.cancel()
	}
	u.wg.Wait()
	for _, s := range u.list {
		s.upstream.close()
	}
}

// candidates returns the upstreams to ask, in order: the live ones, or all
// of them when none is known to be live.
func (u *upstreams) candidates() []*upState {
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

// get asks the candidates in turn; see upstreams. The first answer that is
// not a "not found" is returned; when every reachable upstream said "not
// found", the last such answer is; an error only when none answered.
func (u *upstreams) get(ctx context.Context, method, rel, rawQuery string, hdr http.Header) (*upResponse, error) {
	cands := u.candidates()
	var notFound *upResponse
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
		if isNotFound(resp.Status) {
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
func (u *upstreams) try(ctx context.Context, s *upState, bounded bool, method, rel, rawQuery string, hdr http.Header) (*upResponse, error) {
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
func (u *upstreams) markDown(s *upState, err error) {
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
func (u *upstreams) probeUntilUp(s *upState) {
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
			io.Copy(io.Discard, io.LimitReader(resp.Body, MaxCacheInfoSize))
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
	s.nars.put(key, e.ref, time.Time{})
	return e.ref, true
}
