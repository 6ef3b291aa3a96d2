// Package peering keeps a substituter's kubo peered with the mirrors of
// its upstream cache (the mirror list the cache publishes, package
// mirrorlist, and peers given by hand), so that NARs come from them over
// bitswap without the DHT: a round reads the list, gives kubo every peer
// (kubo's peering keeps and redials them) and dials each at once; rounds
// repeat every Refresh, and mirrors that left the list are dropped.
package peering

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/fleet"
	"github.com/nix-ipfs/nix-ipfs/internal/metrics"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
	"github.com/nix-ipfs/nix-ipfs/upstream"
)

// Kubo is what peering needs from the substituter's kubo to stay
// connected to the mirrors that hold the upstream cache's NARs.
type Kubo interface {
	Self(ctx context.Context) (ipfs.Node, error)
	PeeringAdd(ctx context.Context, addrs []string) error
	PeeringRemove(ctx context.Context, ids ...string) error
	Connect(ctx context.Context, n ipfs.Node) error
	// Conns and Disconnect serve the fleet (fleet.go): who is on the LAN,
	// and letting go of the mirrors when others fetch from them.
	Conns(ctx context.Context) ([]ipfs.Node, error)
	Disconnect(ctx context.Context, id string) error
	Wants(ctx context.Context, id string) (int, error)
}

var _ Kubo = (*ipfs.Kubo)(nil)

// Upstream is where the mirror list is read: the substituter's upstream
// caches.
type Upstream interface {
	Get(ctx context.Context, method, rel, rawQuery string, hdr http.Header) (*upstream.Response, error)
	// Private reports whether the caches are on this host or a private
	// network (PrivateAuto).
	Private(ctx context.Context) bool
	String() string
}

var _ Upstream = (*upstream.Set)(nil)

// Defaults of Options.
const (
	DefaultMirrorRefresh = 5 * time.Minute
	// peeringRetry is how soon a round that failed is tried again.
	peeringRetry = 30 * time.Second
	peeringCall  = 10 * time.Second
)

// peeringFirstWait bounds how long StartPeering waits for its first round
// (a variable for tests).
var peeringFirstWait = 15 * time.Second

// Private says whether a mirror list may send the client to non-public
// addresses (loopback, private, link-local).
type Private string

const (
	// PrivateAuto allows them when the upstream cache is itself private:
	// a file:// directory, or a host that is or resolves to only such
	// addresses.
	PrivateAuto  Private = "auto"
	PrivateAllow Private = "allow"
	PrivateDeny  Private = "deny"
)

// Options configure how the substituter keeps its kubo peered with
// the upstream cache's mirrors (its mirror list, package mirrorlist), so
// that NARs come from them without the DHT.
type Options struct {
	// Kubo is the node to peer; nil turns peering off.
	Kubo Kubo
	// Manual are peers given by hand (--mirror-peer), always kept.
	Manual []mirrorlist.Peer
	// Refresh is how often the list is read again (default 5 min); a
	// negative value never reads it, for Manual peers only.
	Refresh time.Duration
	// MaxPeers bounds the mirrors taken from the list (default 16).
	MaxPeers int
	// Private decides about non-public addresses in the list (default
	// auto).
	Private Private
	// Seeders is how many clients of one LAN keep the mirrors (package
	// fleet); the others take the blocks from them and connect to the
	// mirrors only when their LAN stalls (Fallback). 0: every client
	// keeps the mirrors.
	Seeders int
	// FleetCheck is how often the LAN is looked at again (default 10 s).
	FleetCheck time.Duration
	// FallbackHold is how long the mirrors stay connected after a
	// Fallback (default 5 min).
	FallbackHold time.Duration
}

// Peerer runs the peering rounds for one substituter.
type Peerer struct {
	opts    Options
	up      Upstream
	log     *zap.Logger
	reg     prometheus.Registerer
	timeout time.Duration // of a mirror list read

	mu       sync.Mutex
	listed   map[string]bool   // peers from the list that kubo was given
	fromList []mirrorlist.Peer // what the last list read gave
	last     []mirrorlist.Peer
	gauge    prometheus.Gauge
	fleet    fleetState
	kick     chan struct{} // a Fallback wakes the loop
}

// New returns a Peerer for o, reading the mirror list from up within
// upstreamTimeout; Start runs it. log and reg may be nil.
func New(o Options, up Upstream, log *zap.Logger, reg prometheus.Registerer, upstreamTimeout time.Duration) *Peerer {
	if o.Refresh == 0 {
		o.Refresh = DefaultMirrorRefresh
	}
	if o.Private == "" {
		o.Private = PrivateAuto
	}
	if o.FleetCheck <= 0 {
		o.FleetCheck = DefaultFleetCheck
	}
	if o.FallbackHold <= 0 {
		o.FallbackHold = DefaultFallbackHold
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Peerer{opts: o, up: up, log: log, reg: reg, timeout: upstreamTimeout, kick: make(chan struct{}, 1)}
}

// Start peers the substituter's kubo with the mirrors of its
// upstream cache: once now, returning when that round is done or after
// 15 s, whichever comes first (a failure is logged, never fatal), then
// every Refresh until ctx is done. The returned function waits for the
// loop to end.
func (s *Peerer) Start(ctx context.Context) (wait func()) {
	o := s.opts
	if o.Kubo == nil {
		return func() {}
	}
	s.gauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nixipfs_substituter_mirror_peers",
		Help: "Mirrors (from the upstream's mirror list and --mirror-peer) the last peering round gave kubo.",
	})
	if s.reg != nil {
		s.gauge = metrics.Register(s.reg, s.gauge)
	}
	done, first := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		ok := s.round(ctx)
		close(first)
		var check <-chan time.Time // the fleet's, when there is one
		if o.Seeders > 0 {
			t := time.NewTicker(o.FleetCheck)
			defer t.Stop()
			check = t.C
		}
		for {
			next := o.Refresh
			if o.Refresh < 0 {
				if ok && check == nil {
					return // manual peers only, and kubo has them
				}
				next = peeringRetry
				if ok {
					next = time.Duration(1<<63 - 1)
				}
			} else if !ok {
				next = min(next, peeringRetry)
			}
			timer := time.NewTimer(next)
		wait:
			for {
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case <-check:
					s.fleetCheck(ctx)
				case <-s.kick:
					s.fleetCheck(ctx)
				case <-timer.C:
					break wait
				}
			}
			ok = s.round(ctx)
		}
	}()
	// The first round is waited for, so the first NARs already come from
	// the mirrors, but not for long: a hung upstream or kubo must not keep
	// the substituter from serving.
	select {
	case <-first:
	case <-ctx.Done():
	case <-time.After(peeringFirstWait):
		s.log.Warn("mirror peering: first round still running; serving meanwhile", zap.Duration("waited", peeringFirstWait))
	}
	return func() { <-done }
}

// Peers returns the peers the last round gave kubo.
func (s *Peerer) Peers() []mirrorlist.Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mirrorlist.Peer(nil), s.last...)
}

// round reads the list and tells kubo; it reports whether kubo got
// the peers (a missing or refused list still counts as done).
func (s *Peerer) round(ctx context.Context) bool {
	o := s.opts
	log := s.log.With(zap.String("upstream", s.up.String()))
	cctx, cancel := context.WithTimeout(ctx, peeringCall)
	self, err := o.Kubo.Self(cctx)
	cancel()
	if err != nil {
		log.Warn("mirror peering: kubo does not answer; trying again later", zap.Error(err))
		return false
	}
	var listed []mirrorlist.Peer
	if o.Refresh >= 0 {
		var read bool
		listed, read = s.listedPeers(ctx, self.PeerID, log)
		if !read {
			// No list this time (an upstream down, or answering without
			// one, or a list refused): the mirrors of the last list stay.
			// Only a list that says otherwise drops them.
			s.mu.Lock()
			listed = s.fromList
			s.mu.Unlock()
		}
	}
	all := mirrorlist.MergePeers(append(append([]mirrorlist.Peer{}, o.Manual...), listed...))
	var addrs []string
	for _, p := range all {
		if p.ID != self.PeerID {
			addrs = append(addrs, p.P2PAddrs()...)
		}
	}
	cctx, cancel = context.WithTimeout(ctx, peeringCall)
	defer cancel()
	seed := s.seeds(ctx, self.PeerID, all)
	s.mu.Lock()
	// A fetch in progress keeps the sources it has (fleetCheck).
	seed = seed || (s.fleet.attached && s.fleet.busy > 0)
	s.mu.Unlock()
	if seed {
		// Every round gives kubo all of them again: a restarted daemon has
		// forgotten them, and adding a known peer only refreshes its
		// addresses.
		if err := o.Kubo.PeeringAdd(cctx, addrs); err != nil {
			log.Warn("mirror peering: kubo refused the peers; trying again later", zap.Error(err))
			return false
		}
		// kubo's peering dials a new peer only after 5 to 12 s (a stagger
		// meant for its own start); a NAR wanted meanwhile would wait or
		// fall back to upstream. So each is dialled now too; once
		// connected, peering keeps the connection and redials it.
		s.connectAll(ctx, all, self.PeerID, log)
	} else {
		s.detach(ctx, all, log)
	}
	s.mu.Lock()
	s.fleet.self, s.fleet.attached = self.PeerID, seed
	s.mu.Unlock()
	now := map[string]bool{}
	for _, p := range listed {
		now[p.ID] = true
	}
	manual := map[string]bool{}
	for _, p := range o.Manual {
		manual[p.ID] = true
	}
	s.mu.Lock()
	var gone []string
	for id := range s.listed {
		if !now[id] && !manual[id] {
			gone = append(gone, id)
		}
	}
	s.listed, s.last, s.fromList = now, all, listed
	s.mu.Unlock()
	if len(gone) > 0 {
		if err := o.Kubo.PeeringRemove(cctx, gone...); err != nil {
			log.Warn("mirror peering: could not drop mirrors that left the list", zap.Strings("peer_ids", gone), zap.Error(err))
		}
	}
	ids := make([]string, 0, len(all))
	for _, p := range all {
		ids = append(ids, p.ID)
	}
	if s.gauge != nil {
		s.gauge.Set(float64(len(all)))
	}
	log.Info("mirror peering", zap.Int("peers", len(all)), zap.Int("from_list", len(listed)), zap.Int("by_hand", len(o.Manual)),
		zap.Strings("peer_ids", ids), zap.Strings("dropped", gone), zap.Bool("connected", seed))
	return true
}

// connectAll dials every peer at once, in parallel, each bounded by
// peeringCall. A peer that cannot be dialled now is left to kubo's peering.
func (s *Peerer) connectAll(ctx context.Context, peers []mirrorlist.Peer, self string, log *zap.Logger) {
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.ID == self {
			continue
		}
		n := ipfs.Node{PeerID: p.ID}
		for _, a := range p.Addrs {
			n.Addrs = append(n.Addrs, a.String())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, peeringCall)
			defer cancel()
			if err := s.opts.Kubo.Connect(cctx, n); err != nil {
				log.Info("mirror not reachable now; kubo's peering keeps trying", zap.String("peer_id", n.PeerID), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

// listedPeers fetches the upstream's mirror list and returns what the
// policy accepts of it, logging what it refuses; read is false when no
// list was read (none there, the upstream failed, or it was refused whole).
func (s *Peerer) listedPeers(ctx context.Context, self string, log *zap.Logger) (peers []mirrorlist.Peer, read bool) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	l, err := s.fetchMirrorList(ctx)
	if err != nil {
		log.Warn("mirror list refused", zap.Error(err))
		return nil, false
	}
	if l == nil {
		log.Debug("upstream has no mirror list")
		return nil, false
	}
	allow := s.opts.Private == PrivateAllow ||
		(s.opts.Private == PrivateAuto && s.up.Private(ctx))
	peers, dropped := mirrorlist.Policy{MaxPeers: s.opts.MaxPeers, AllowPrivate: allow, Self: self}.Peers(l)
	if len(dropped) > 0 {
		log.Warn("mirror list: entries or addresses refused", zap.Bool("private_allowed", allow),
			zap.Int("entries", len(l.Mirrors)), zap.Strings("refused", dropped))
	}
	return peers, true
}

// fetchMirrorList returns the upstream's list, nil when it has none.
func (s *Peerer) fetchMirrorList(ctx context.Context) (*mirrorlist.List, error) {
	resp, err := s.up.Get(ctx, http.MethodGet, mirrorlist.FileName, "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.Status == http.StatusOK:
	case upstream.IsNotFound(resp.Status):
		return nil, nil
	default:
		return nil, fmt.Errorf("upstream %s: %s: HTTP %d", s.up, mirrorlist.FileName, resp.Status)
	}
	if resp.Length > mirrorlist.MaxSize {
		return nil, fmt.Errorf("upstream %s: %s: %w", s.up, mirrorlist.FileName, mirrorlist.ErrTooLarge)
	}
	l, err := mirrorlist.Read(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %s: %w", s.up, mirrorlist.FileName, err)
	}
	return l, nil
}

// Config is the substituter's peering settings (its --mirror-* flags).
type Config struct {
	Peers   config.Strings
	Refresh time.Duration
	Max     int
	Private string
	Seeders int

	manual []mirrorlist.Peer
}

// Register adds the peering flags.
func (c *Config) Register(s *config.Set) {
	s.StringsVar(&c.Peers, "mirror-peer", "keep kubo connected to this mirror: a multiaddr ending in /p2p/<peer ID> (kubo's peering; added to those the upstream's mirror list names)")
	s.DurationVar(&c.Refresh, "mirror-refresh", DefaultMirrorRefresh,
		"read the upstream's mirror list ("+mirrorlist.FileName+") at start and this often, and keep kubo peered with the mirrors it names, so NARs come from them without the DHT (negative: never read it; only --mirror-peer)")
	s.IntVar(&c.Max, "mirror-max", mirrorlist.DefaultMaxPeers, "peer with at most this many mirrors from the list (the most recently active first)")
	s.IntVar(&c.Seeders, "mirror-seeders", fleet.DefaultSeeders,
		"of the clients on one LAN (peers kubo is connected to on loopback, private or link-local addresses, mDNS's), only the first this many by peer ID keep the mirrors; the others take the blocks from them. When the LAN gives nothing for --block-fetch-stall, the first of the clients fetching connects to the mirrors (the others too if nothing comes for 2 s more) and keeps them 5 minutes. It keeps a fleet's fetch of one closure near one copy from the mirrors (docs/OPERATIONS.md, \"A fleet on one network\"); a client alone keeps them always. 0: every client keeps the mirrors. Needs --block-fetch-parallel")
	s.StringVar(&c.Private, "mirror-private", string(PrivateAuto),
		"listed mirror addresses on loopback, private or link-local networks: auto (accepted only when the upstream itself is such a host or a file:// directory), allow, or deny")
}

// Validate checks the peering settings; gateway says NARs come from a
// gateway, where there is no kubo to peer.
func (c *Config) Validate(gateway bool) error {
	if c.Private == "" {
		c.Private = string(PrivateAuto)
	}
	if c.Max == 0 {
		c.Max = mirrorlist.DefaultMaxPeers
	}
	switch Private(c.Private) {
	case PrivateAuto, PrivateAllow, PrivateDeny:
	default:
		return fmt.Errorf("--mirror-private %q: want auto, allow or deny", c.Private)
	}
	if c.Max < 0 {
		return fmt.Errorf("--mirror-max %d: must be at least 1", c.Max)
	}
	if c.Seeders < 0 {
		return fmt.Errorf("--mirror-seeders %d: must be 0 (off) or more", c.Seeders)
	}
	if gateway && len(c.Peers) > 0 {
		return errors.New("--mirror-peer needs kubo (--kubo-api): a gateway has no peering to set")
	}
	c.manual = nil
	for _, a := range c.Peers {
		p, err := mirrorlist.ParsePeer(a)
		if err != nil {
			return fmt.Errorf("--mirror-peer %w", err)
		}
		c.manual = append(c.manual, p)
	}
	return nil
}

// Options returns the Options for kubo k (nil: no peering).
func (c *Config) Options(k Kubo) Options {
	if k == nil {
		return Options{}
	}
	return Options{Kubo: k, Manual: c.manual, Refresh: c.Refresh, MaxPeers: c.Max, Private: Private(c.Private), Seeders: c.Seeders}
}
