package peering

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/fleet"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// Defaults of the fleet's Options.
const (
	DefaultFleetCheck   = 10 * time.Second
	DefaultFallbackHold = 5 * time.Minute
	// fallbackPatience is how long a client that is not the first of the
	// LAN's fetching clients waits, quiet, for that one to bring the
	// blocks, before it connects to the mirrors itself.
	fallbackPatience = 2 * time.Second
)

// fleetState is what the Peerer knows of its client's place in the LAN
// (package fleet), under its mu.
type fleetState struct {
	self     string    // the client's kubo's peer ID, from the last round
	attached bool      // the mirrors are in kubo's peering and dialled
	holdTill time.Time // a Fallback keeps them attached until then
	busy     int       // fetches going on (Fetching)
	// A quiet episode: Fallbacks since episode, none more than
	// 2*fallbackPatience apart; pending until fleetCheck looks.
	episode, lastQuiet time.Time
	pending            bool
	lanPeers           int // clients of the LAN at the last look
}

// seeds reports whether the client keeps the mirrors: seeding is off, it
// is one of the fleet's seeders, or a Fallback holds them. A kubo that
// cannot list its connections seeds: the fleet is an economy, never a
// reason to fetch nothing.
func (s *Peerer) seeds(ctx context.Context, self string, mirrors []mirrorlist.Peer) bool {
	if s.opts.Seeders < 1 || len(mirrors) == 0 {
		return true
	}
	s.mu.Lock()
	hold := time.Now().Before(s.fleet.holdTill)
	s.mu.Unlock()
	if hold {
		return true
	}
	lan, err := s.lan(ctx, mirrors)
	if err != nil {
		s.log.Info("fleet: kubo's connections unknown; keeping the mirrors", zap.Error(err))
		return true
	}
	s.mu.Lock()
	s.fleet.lanPeers = len(lan)
	s.mu.Unlock()
	return fleet.Seeds(self, lan, s.opts.Seeders)
}

// OnLAN says whether the client had other clients of its LAN at the
// fleet's last look (false when it does not look: one seeder or fewer
// configured is not a fleet, and a fleet with no mirrors has nothing to
// share out).
func (s *Peerer) OnLAN() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fleet.lanPeers > 0
}

// lan returns the peer IDs of the client's LAN (fleet.LAN).
func (s *Peerer) lan(ctx context.Context, mirrors []mirrorlist.Peer) ([]string, error) {
	cctx, cancel := context.WithTimeout(ctx, peeringCall)
	defer cancel()
	conns, err := s.opts.Kubo.Conns(cctx)
	if err != nil {
		return nil, err
	}
	isMirror := make(map[string]bool, len(mirrors))
	for _, m := range mirrors {
		isMirror[m.ID] = true
	}
	peers := make([]fleet.Peer, 0, len(conns))
	for _, c := range conns {
		for _, a := range c.Addrs {
			peers = append(peers, fleet.Peer{ID: c.PeerID, Addr: a})
		}
	}
	return fleet.LAN(peers, isMirror), nil
}

// fetching returns the peers of lan that are asking the client's kubo for
// blocks now (bitswap's wantlist of each): the clients of the LAN that
// fetch at the same time. One that cannot be asked counts as fetching.
func (s *Peerer) fetching(ctx context.Context, lan []string) []string {
	cctx, cancel := context.WithTimeout(ctx, peeringCall)
	defer cancel()
	var out []string
	for _, id := range lan {
		if n, err := s.opts.Kubo.Wants(cctx, id); err != nil || n > 0 {
			out = append(out, id)
		}
	}
	return out
}

// detach takes the mirrors out of kubo's peering and closes the
// connections to them, so that kubo's bitswap asks the LAN.
func (s *Peerer) detach(ctx context.Context, mirrors []mirrorlist.Peer, log *zap.Logger) {
	ids := make([]string, 0, len(mirrors))
	for _, m := range mirrors {
		ids = append(ids, m.ID)
	}
	cctx, cancel := context.WithTimeout(ctx, peeringCall)
	defer cancel()
	if err := s.opts.Kubo.PeeringRemove(cctx, ids...); err != nil {
		log.Warn("fleet: could not take the mirrors out of kubo's peering", zap.Error(err))
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.opts.Kubo.Disconnect(cctx, id); err != nil {
				log.Info("fleet: could not disconnect a mirror", zap.String("peer_id", id), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

// fleetCheck looks at the LAN again and attaches or detaches the mirrors
// if the client's place changed. It detaches only while no fetch is going
// on: a fetch in progress keeps the sources it has.
//
// After a Fallback (the LAN gave nothing), the client's seeders are not
// fetching what it fetches (a part of the fleet upgrades, the others are
// idle). Then the first Seeders of the clients fetching now (those asking
// this kubo for blocks) take the mirrors, and the rest wait for them;
// one still quiet after fallbackPatience connects too.
func (s *Peerer) fleetCheck(ctx context.Context) {
	s.mu.Lock()
	mirrors, self, attached, busy := s.last, s.fleet.self, s.fleet.attached, s.fleet.busy > 0
	pending, episode := s.fleet.pending, s.fleet.episode
	s.fleet.pending = false
	s.mu.Unlock()
	if self == "" || len(mirrors) == 0 {
		return
	}
	log := s.log.With(zap.Int("mirrors", len(mirrors)))
	seed := s.seeds(ctx, self, mirrors)
	if !seed && pending {
		lan, err := s.lan(ctx, mirrors)
		if err != nil || time.Since(episode) >= fallbackPatience ||
			fleet.Seeds(self, s.fetching(ctx, lan), s.opts.Seeders) {
			seed = true
			s.mu.Lock()
			s.fleet.holdTill = time.Now().Add(s.opts.FallbackHold)
			s.mu.Unlock()
			log.Info("fleet: the LAN gave nothing; connecting to the mirrors", zap.Duration("quiet_since", time.Since(episode)))
		}
	}
	switch {
	case seed && !attached:
		var addrs []string
		for _, p := range mirrors {
			addrs = append(addrs, p.P2PAddrs()...)
		}
		cctx, cancel := context.WithTimeout(ctx, peeringCall)
		err := s.opts.Kubo.PeeringAdd(cctx, addrs)
		cancel()
		if err != nil {
			log.Warn("fleet: kubo refused the mirrors; trying again later", zap.Error(err))
			return
		}
		s.connectAll(ctx, mirrors, self, log)
		log.Info("fleet: connected to the mirrors")
	case !seed && attached && !busy:
		s.detach(ctx, mirrors, log)
		log.Info("fleet: other clients of the LAN fetch from the mirrors; this one takes from them")
	default:
		return
	}
	s.mu.Lock()
	s.fleet.attached = seed
	s.mu.Unlock()
}

// Fallback says a fetch got nothing at all for a while: if the client
// let go of the mirrors, it looks again at once (fleetCheck). It does not
// wait. While attached, it holds the mirrors for FallbackHold.
func (s *Peerer) Fallback() {
	now := time.Now()
	s.mu.Lock()
	if s.fleet.attached {
		s.fleet.holdTill = now.Add(s.opts.FallbackHold)
		s.mu.Unlock()
		return
	}
	if now.Sub(s.fleet.lastQuiet) > 2*fallbackPatience {
		s.fleet.episode = now
	}
	s.fleet.lastQuiet, s.fleet.pending = now, true
	s.mu.Unlock()
	if s.opts.Seeders < 1 {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Fetching marks a fetch as going on until done is called: the mirrors
// are not let go of under it.
func (s *Peerer) Fetching() (done func()) {
	s.mu.Lock()
	s.fleet.busy++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.fleet.busy--
			s.mu.Unlock()
		})
	}
}
