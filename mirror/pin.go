package mirror

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/watchdog"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// IPFS is what a mirror needs from its own IPFS node.
type IPFS interface {
	Connect(ctx context.Context, n ipfs.Node) error
	Pin(ctx context.Context, c cid.Cid, name string) error
	IsPinned(ctx context.Context, c cid.Cid) (bool, error)
	Unpin(ctx context.Context, c cid.Cid) error
	Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error)
	Self(ctx context.Context) (ipfs.Node, error)
}

var _ IPFS = (*ipfs.Kubo)(nil)

// Item is one NAR to pin.
type Item struct {
	CID       cid.Cid
	StorePath string
	// NarHash is "sha256:<nix32>", as signed in the narinfo; NarSize its
	// length. Verification checks the pinned bytes against both.
	NarHash string
	NarSize int64
	// Providers are nodes known to hold the CID, dialled before the pin so
	// that blocks flow without waiting for content routing.
	Providers []ipfs.Node
	// EventID is the "published" event's id, for logs; "" for backfills.
	EventID string
	// NarInfo is what the mirror's own cache keeps once the CID is pinned;
	// nil when there is none to keep, and NoNarInfo says why.
	NarInfo   *narinfo.NarInfo
	NoNarInfo error
}

// FromPublished returns the Item a "published" event announces.
func FromPublished(ev *events.Published) (Item, error) {
	c, err := cid.Decode(ev.CID)
	if err != nil {
		return Item{}, errs.Errorf(errs.Invalid, "published event %s: cid %q: %w", ev.ID, ev.CID, err)
	}
	it := Item{CID: c, StorePath: ev.StorePath, NarHash: ev.NarHash, NarSize: ev.NarSize, EventID: ev.ID}
	it.NarInfo, it.NoNarInfo = mirrorcache.NarInfo(ev)
	if ev.Publisher.PeerID != "" {
		it.Providers = []ipfs.Node{{PeerID: ev.Publisher.PeerID, Addrs: ev.Publisher.Addrs}}
	}
	return it, nil
}

// FromNarInfo returns the Item for a narinfo's IPFSHash, or an Invalid
// error when it has none or its fields do not parse.
func FromNarInfo(ni *narinfo.NarInfo) (Item, error) {
	if ni.IPFSHash == "" {
		return Item{}, errs.Errorf(errs.Invalid, "narinfo of %s has no IPFSHash", ni.StorePath)
	}
	c, err := cid.Decode(ni.IPFSHash)
	if err != nil {
		return Item{}, errs.Errorf(errs.Invalid, "narinfo of %s: IPFSHash %q: %w", ni.StorePath, ni.IPFSHash, err)
	}
	h, err := ni.NarHashNix32()
	if err != nil {
		return Item{}, errs.Errorf(errs.Invalid, "narinfo of %s: %w", ni.StorePath, err)
	}
	if ni.NarSize > 1<<62 {
		return Item{}, errs.Errorf(errs.Invalid, "narinfo of %s: NarSize %d out of range", ni.StorePath, ni.NarSize)
	}
	it := Item{CID: c, StorePath: ni.StorePath, NarHash: h, NarSize: int64(ni.NarSize)}
	if it.NoNarInfo = mirrorcache.Servable(ni); it.NoNarInfo == nil {
		it.NarInfo = ni
	}
	return it, nil
}

// Result is what Pin did.
type Result struct {
	Item Item
	// Fresh is true when this call pinned the CID, false when it was pinned
	// already.
	Fresh    bool
	Verified bool
	// Start is when the pin began; Took how long pinning (and verifying)
	// took.
	Start time.Time
	Took  time.Duration
	// Event is the "pinned" event published, or nil when none was (no
	// mirror name or no JetStream).
	Event *events.Pinned
}

// PinnerOptions configure a Pinner.
type PinnerOptions struct {
	// Mirror is the mirror's name, which "pinned" events carry. With JS
	// nil or Mirror empty no event is published.
	Mirror string
	// Announce are the addresses the mirror tells clients to dial it on
	// (--announce-addr), sent in its "pinned" events.
	Announce []string
	JS       jetstream.JetStream
	// Verify reads the pinned bytes back and checks them against NarHash
	// and NarSize before a pin counts as done.
	Verify bool
	// PinTimeout bounds one attempt to pin (and verify) one CID. Default
	// 10 minutes.
	PinTimeout time.Duration
	// PinStall asks kubo again for a pin that fetched nothing for this
	// long (a node that reports progress: ipfs.Kubo). Default
	// DefaultPinStall; negative: never.
	PinStall time.Duration
	// PinHedge asks kubo a second time, beside the first request and
	// without cancelling it, for a pin that fetched nothing for this
	// long; whichever succeeds first ends the attempt. Default
	// DefaultPinHedge, never more than PinStall/2; negative: never. It
	// rides on the progress reports of the stall guard, so PinStall
	// negative turns it off too.
	PinHedge time.Duration
	// ConnectTimeout bounds dialling a provider. Default 10 s.
	ConnectTimeout time.Duration
	Logger         *zap.Logger
	// QuietPins logs each pin at debug level rather than info: for batch
	// commands, whose progress display says the same.
	QuietPins bool
	// OnPin, if set, is called after every Pin with its outcome.
	OnPin func(r Result, err error)
	// Cache, if set, keeps each Item's NarInfo once its CID is pinned.
	Cache *mirrorcache.Cache
}

// DefaultPinTimeout is PinnerOptions.PinTimeout's default.
const DefaultPinTimeout = 10 * time.Minute

// DefaultPinStall is PinnerOptions.PinStall's default: kubo reports a
// pin's progress twice a second, and a block of at most 1 MiB that takes
// a minute is a link of under 20 KB/s, where --pin-stall is to be raised.
const DefaultPinStall = time.Minute

// DefaultPinHedge is PinnerOptions.PinHedge's default: ten of kubo's
// progress reports without a new block. A hedge is cheap, since kubo's
// bitswap sends each want once per peer however many sessions want it:
// beside a pin that is still moving it costs a walk of the local blocks,
// not a second download. So it can come long before the stall guard's
// minute, which must wait out a slow link's blocks.
const DefaultPinHedge = 5 * time.Second

// Pinner pins Items on one IPFS node and announces them. It is safe for
// concurrent use; every Pin is idempotent.
type Pinner struct {
	opt  PinnerOptions
	node IPFS
	log  *zap.Logger

	mu    sync.Mutex
	dials map[string]dial // by peer ID

	selfMu   sync.Mutex
	self     ipfs.Node
	selfTime time.Time
}

type dial struct {
	at time.Time
	ok bool
}

// redialAfter is how long a dial's outcome is trusted: a connected peer is
// not dialled again for every event, and an unreachable one does not cost
// every event a connect timeout.
const redialAfter = 30 * time.Second

// NewPinner returns a Pinner for node.
func NewPinner(node IPFS, opt PinnerOptions) *Pinner {
	if opt.PinTimeout <= 0 {
		opt.PinTimeout = DefaultPinTimeout
	}
	if opt.PinStall == 0 {
		opt.PinStall = DefaultPinStall
	}
	if opt.PinHedge == 0 {
		opt.PinHedge = DefaultPinHedge
	}
	// The hedge is to come while the request it joins still runs, not
	// after the stall guard cancelled it.
	if opt.PinStall > 0 && opt.PinHedge > opt.PinStall/2 {
		opt.PinHedge = opt.PinStall / 2
	}
	if opt.ConnectTimeout <= 0 {
		opt.ConnectTimeout = 10 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	return &Pinner{opt: opt, node: node, log: opt.Logger, dials: map[string]dial{}}
}

// Pin makes sure it.CID is pinned recursively on the node, verifying it if
// so configured, and announces it with a "pinned" event. A CID pinned
// already is verified (if so configured) and announced again, nothing more.
//
// Errors: the node unreachable is Transient; the attempt running past
// PinTimeout is of kind Other, so that a consumer gives up after its
// attempts; bytes that do not match NarHash are Corrupt, and the CID is
// unpinned first.
func (p *Pinner) Pin(ctx context.Context, it Item) (Result, error) {
	r, err := p.pin(ctx, it)
	if p.opt.OnPin != nil {
		p.opt.OnPin(r, err)
	}
	return r, err
}

func (p *Pinner) pin(ctx context.Context, it Item) (Result, error) {
	r := Result{Item: it, Start: time.Now()}
	log := p.log.With(zap.String("cid", it.CID.String()), zap.String("store_path", it.StorePath))
	if it.EventID != "" {
		log = log.With(zap.String("event_id", it.EventID))
	}
	if !it.CID.Defined() {
		return r, errs.Errorf(errs.Invalid, "%s: no CID", it.StorePath)
	}
	actx, cancel := context.WithTimeout(ctx, p.opt.PinTimeout)
	defer cancel()
	// timedOut turns an error caused by this attempt's own deadline into
	// one that is not Transient, whatever kubo said as the request died.
	timedOut := func(what string, err error) error {
		if err != nil && !errs.Is(err, errs.Corrupt) && !errs.Is(err, errs.Invalid) &&
			ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
			return errs.E(errs.NotYet, fmt.Errorf("%s %s (%s): not done within the pin timeout of %v; no reachable node may have it: %w",
				what, it.CID, it.StorePath, p.opt.PinTimeout, err))
		}
		return err
	}

	pinned, err := p.node.IsPinned(actx, it.CID)
	if err != nil {
		p.forget(it.Providers)
		return r, timedOut("pin ls", fmt.Errorf("%s: %w", it.StorePath, err))
	}
	if !pinned {
		for _, n := range it.Providers {
			p.connect(actx, log, n)
		}
		log.Debug("pin started", zap.Time("start", r.Start), zap.Duration("checked_and_dialled", time.Since(r.Start)))
		if err := p.pinNode(actx, log, it); err != nil {
			p.forget(it.Providers)
			return r, timedOut("pin", fmt.Errorf("%s: %w", it.StorePath, err))
		}
		r.Fresh = true
	}
	if p.opt.Verify {
		if err := p.verify(actx, it); err != nil {
			if errs.Is(err, errs.Corrupt) {
				// A CID that does not hold what was signed must not stay, nor
				// count as a copy.
				uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				if uerr := p.node.Unpin(uctx, it.CID); uerr != nil {
					log.Error("cannot unpin a corrupt CID", zap.Error(uerr))
				}
				ucancel()
			}
			return r, timedOut("verify", err)
		}
		r.Verified = true
	}
	r.Took = time.Since(r.Start)
	if err := p.keep(log, it); err != nil {
		return r, err
	}
	if p.opt.JS != nil && p.opt.Mirror != "" {
		ev, err := p.announce(ctx, it, r)
		if err != nil {
			return r, err
		}
		r.Event = ev
	}
	if r.Fresh && !p.opt.QuietPins {
		log.Info("pinned", zap.Int64("bytes", it.NarSize), zap.Duration("took", r.Took), zap.Bool("verified", r.Verified))
	} else {
		log.Debug("pin done", zap.Bool("fresh", r.Fresh), zap.Duration("took", r.Took), zap.Bool("verified", r.Verified))
	}
	return r, nil
}

// progressPinner pins reporting progress; *ipfs.Kubo has it.
type progressPinner interface {
	PinProgress(ctx context.Context, c cid.Cid, name string, progress func()) error
}

var _ progressPinner = (*ipfs.Kubo)(nil)

// pinNode pins it.CID on the node. A pin that fetches nothing for
// PinStall is asked again: kubo's bitswap can leave a pin waiting for
// blocks until the attempt's PinTimeout, 10 minutes. Seen in the bench
// (2026-12-07, section 15): B's pin waited minutes for 18 blocks that B
// had received already (counted as duplicates) while A's view of B's
// wantlist was empty; a new `pin add` of the same CID finished in 84 ms.
// A new request walks the DAG afresh, takes what is local, and asks the
// peers again, in a new bitswap session, for the rest.
//
// The stall guard must wait a minute, as a block on a slow link can take
// that long, and the stall cost the bench that minute in 2 rounds of 3.
// So before it, a pin quiet for PinHedge gets a second request beside the
// first (pinHedged), which finishes at once when the blocks are in fact
// local, and costs little when they are still arriving.
func (p *Pinner) pinNode(ctx context.Context, log *zap.Logger, it Item) error {
	pp, ok := p.node.(progressPinner)
	if !ok || p.opt.PinStall < 0 {
		return p.node.Pin(ctx, it.CID, pinName(it.StorePath))
	}
	for try := 1; ; try++ {
		wd := watchdog.New(ctx, p.opt.PinStall)
		err := p.pinHedged(wd, log, pp, it)
		stalled := wd.Stalled()
		wd.Stop()
		if err == nil || !stalled || ctx.Err() != nil {
			return err
		}
		log.Warn("pin stalled: nothing fetched for --pin-stall; asking kubo again", zap.Duration("pin_stall", p.opt.PinStall), zap.Int("try", try))
	}
}

// pinHedged asks pp for the pin under wd and, once nothing was fetched
// for PinHedge, a second time beside the first request: at most once, both
// reporting progress to wd. The first of the two to succeed ends it, the
// other is cancelled and waited for; if one fails, the other is waited
// for, and when both fail the first error is returned.
func (p *Pinner) pinHedged(wd *watchdog.Watchdog, log *zap.Logger, pp progressPinner, it Item) error {
	name := pinName(it.StorePath)
	if p.opt.PinHedge < 0 {
		return pp.PinProgress(wd.Context(), it.CID, name, wd.Progress)
	}
	ctx, cancel := context.WithCancel(wd.Context())
	defer cancel()
	// quiet's context ends once neither request reported progress for
	// PinHedge; nothing runs under it, it is only the signal.
	quiet := watchdog.New(ctx, p.opt.PinHedge)
	defer quiet.Stop()
	progress := func() {
		wd.Progress()
		quiet.Progress()
	}
	type outcome struct {
		hedge bool
		err   error
	}
	done := make(chan outcome, 2)
	ask := func(hedge bool) {
		go func() { done <- outcome{hedge, pp.PinProgress(ctx, it.CID, name, progress)} }()
	}
	ask(false)
	running, quietDone := 1, quiet.Context().Done()
	var hedged time.Time
	var firstErr error
	for running > 0 {
		select {
		case o := <-done:
			running--
			if o.err != nil {
				if firstErr == nil {
					firstErr = o.err
				}
				continue
			}
			cancel()
			for ; running > 0; running-- {
				<-done
			}
			if o.hedge {
				// A first request that failed rather than waited says
				// something of its own about the node.
				log.Info("pin done by the second request (the hedge), not the first",
					zap.Duration("hedge_took", time.Since(hedged)), zap.NamedError("first_error", firstErr))
			}
			return nil
		case <-quietDone:
			quietDone = nil
			if ctx.Err() != nil {
				continue // wd stalled or the attempt ended: the requests end with it
			}
			log.Info("pin quiet for --pin-hedge; asking kubo a second time beside the first", zap.Duration("pin_hedge", p.opt.PinHedge))
			hedged = time.Now()
			ask(true)
			running++
		}
	}
	return firstErr
}

// pinName is the name the pin gets in kubo: the store path's basename, so
// that `ipfs pin ls --names` says what each pin is.
func pinName(storePath string) string {
	if storePath == "" {
		return ""
	}
	return path.Base(storePath)
}

// connect dials n unless it was dialled recently. A failure is only
// logged: the pin may still find the blocks through other peers.
func (p *Pinner) connect(ctx context.Context, log *zap.Logger, n ipfs.Node) {
	p.mu.Lock()
	last, seen := p.dials[n.PeerID]
	p.mu.Unlock()
	if seen && time.Since(last.at) < redialAfter {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, p.opt.ConnectTimeout)
	err := p.node.Connect(cctx, n)
	cancel()
	p.mu.Lock()
	p.dials[n.PeerID] = dial{at: time.Now(), ok: err == nil}
	p.mu.Unlock()
	if err != nil {
		log.Warn("cannot connect to the publishing node; pinning through other peers",
			zap.String("peer_id", n.PeerID), zap.Strings("addrs", n.Addrs), zap.Error(err))
	}
}

// forget drops the remembered dials of nodes, so that the next attempt
// dials them again. A failed attempt may mean that this node restarted or
// lost its connections (a daemon restart, a cut link): trusting an old
// successful dial would leave the retry waiting for blocks from a peer it is
// no longer connected to until the pin timeout.
func (p *Pinner) forget(nodes []ipfs.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range nodes {
		delete(p.dials, n.PeerID)
	}
}

// verify reads c back from the node and checks its length and SHA-256.
func (p *Pinner) verify(ctx context.Context, it Item) error {
	if it.NarHash == "" {
		return errs.Errorf(errs.Invalid, "verify %s (%s): no NarHash to check against", it.CID, it.StorePath)
	}
	rc, err := p.node.Cat(ctx, it.CID)
	if err != nil {
		return fmt.Errorf("verify %s: %w", it.StorePath, err)
	}
	defer rc.Close()
	h := sha256.New()
	// One byte past NarSize is enough to tell that it is too long.
	n, err := io.Copy(h, io.LimitReader(rc, it.NarSize+1))
	if err != nil {
		return fmt.Errorf("verify %s: read %s: %w", it.StorePath, it.CID, err)
	}
	got := "sha256:" + nixbase32.EncodeToString(h.Sum(nil))
	if n != it.NarSize || got != it.NarHash {
		size := fmt.Sprintf("%d bytes", n)
		if n > it.NarSize {
			size = "more than " + size
		}
		return errs.Errorf(errs.Corrupt, "CID %s of %s holds %s hashing to %s, but the signed narinfo says %s (%d bytes)",
			it.CID, it.StorePath, size, got, it.NarHash, it.NarSize)
	}
	return nil
}

func (p *Pinner) announce(ctx context.Context, it Item, r Result) (*events.Pinned, error) {
	self, err := p.selfNode(ctx)
	if err != nil {
		return nil, err
	}
	addrs := append([]string{}, self.Addrs...)
	if len(addrs) > 64 {
		addrs = addrs[:64]
	}
	ev := &events.Pinned{
		// Time minus DurationMS is when the pin started.
		Header:     events.Header{Time: r.Start.Add(r.Took).UTC()},
		Mirror:     p.opt.Mirror,
		CID:        it.CID.String(),
		StorePath:  it.StorePath,
		Bytes:      max(it.NarSize, 0),
		DurationMS: r.Took.Milliseconds(),
		Verified:   r.Verified,
		Node:       events.Node{PeerID: self.PeerID, Addrs: addrs},
	}
	if len(p.opt.Announce) > 0 {
		ev.AnnounceAddrs = append([]string{}, p.opt.Announce...)
	}
	events.Seal(ev)
	if _, err := events.Publish(ctx, p.opt.JS, events.SubjectPinned(p.opt.Mirror), ev); err != nil {
		return nil, fmt.Errorf("announce pin of %s: %w", it.StorePath, err)
	}
	return ev, nil
}

// selfNode returns the node's identity, cached for a minute.
func (p *Pinner) selfNode(ctx context.Context) (ipfs.Node, error) {
	p.selfMu.Lock()
	defer p.selfMu.Unlock()
	if p.self.PeerID != "" && time.Since(p.selfTime) < time.Minute {
		return p.self, nil
	}
	n, err := p.node.Self(ctx)
	if err != nil {
		if p.self.PeerID != "" {
			return p.self, nil
		}
		return ipfs.Node{}, fmt.Errorf("identity of the mirror's node: %w", err)
	}
	p.self, p.selfTime = n, time.Now()
	return n, nil
}

// keep writes the pinned item's narinfo into the mirror's cache, after the
// pin, so the cache never names a NAR this node does not hold. A narinfo
// that cannot be kept (no signature, another store) is logged, not an
// error: the pin itself is good. A disk error is, and the pin is retried.
func (p *Pinner) keep(log *zap.Logger, it Item) error {
	if p.opt.Cache == nil {
		return nil
	}
	if it.NarInfo == nil {
		if it.NoNarInfo != nil {
			log.Warn("pinned, but no narinfo kept for the mirror's cache", zap.Error(it.NoNarInfo))
		}
		return nil
	}
	err := p.opt.Cache.Put(it.NarInfo)
	switch {
	case err == nil:
		return nil
	case errs.Is(err, errs.Invalid):
		log.Warn("pinned, but the narinfo does not fit the mirror's cache", zap.Error(err))
		return nil
	default:
		return fmt.Errorf("keep narinfo of %s: %w", it.StorePath, err)
	}
}
