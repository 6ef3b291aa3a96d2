package mirror

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// cidOrder makes the latest event about a CID win when a mirror handles
// its events concurrently: a "retired" event and a later "published" event
// of the same CID (a path pruned, then built and published again) may be
// delivered together, and must end with the CID pinned. Each CID's
// operations run one at a time, and one whose stream sequence is older than
// the last one handled for that CID is skipped.
//
// # What it remembers, and for how long
//
// last[c], the latest sequence handled for c, is needed only while an
// older event about c can still be handled: one delivered before it and
// not yet handled, one that failed and waits for its redelivery, or one
// left unacked by an earlier run of this mirror, which JetStream
// redelivers whenever its backoff ends. What no event can be anymore is
// settled: the consumer's ack floor is the stream sequence at and below
// which the server holds every event this consumer gets as acked or
// terminated, and it never delivers those again. First deliveries come in
// stream order, so once the floor reaches last[c] every older event about
// c has been delivered and settled, and the entry can go: a later event
// about c has a higher sequence, and runs whether or not the entry is
// there.
//
// So once last holds pruneAt entries, the handler that adds the one that
// reaches the mark asks the server for the floor (one request) and drops
// every entry at or below it; the next mark is twice what is left (at
// least minPruneAt), so a floor held back by an event that keeps failing
// costs a request per doubling, not per event. What the order holds is
// the CIDs handled since the oldest event still unsettled, plus fewer than
// pruneAt added since the last look. An event stays unsettled for at most
// its retries: MaxAttempts deliveries with backoff when its CID cannot be
// pinned yet; a Transient failure means the mirror's kubo is unreachable,
// when other events fail too. So the order is bounded by what a mirror
// handles while one event runs out its retries, not by the stream's
// history. The per-CID locks live only while an event about their CID is
// in flight.
//
// One case the floor cannot see: an event delivered a second time while
// its first delivery still runs (its ack wait ran out despite the
// heartbeat, a stall of 2/3 of AckWait), whose first delivery is acked,
// a newer event about the same CID handled, and the floor read, all
// before the second copy reaches its handler; that copy then runs. Only
// keeping every entry for ever covers it, and a restarted mirror starts
// with an empty order anyway. An order without a floor
// (nil: a Worker with no consumer, which handles only the events it is
// given) keeps every entry.
type cidOrder struct {
	floor func(ctx context.Context) (uint64, error)
	log   *zap.Logger

	// minPrune is the fewest entries at which the order asks for the
	// floor (minPruneAt; tests lower it).
	minPrune int

	mu      sync.Mutex
	last    map[string]uint64
	locks   map[string]*cidLock
	pruneAt int
	pruning bool
}

type cidLock struct {
	sync.Mutex
	users int
}

// minPruneAt is the fewest entries the order holds before it asks for the
// ack floor: a request per thousand events handled at most.
const minPruneAt = 1024

// floorTimeout bounds the request for the ack floor; a handler waits for
// it, and an order that cannot learn the floor keeps its entries.
const floorTimeout = 5 * time.Second

// newCIDOrder returns an order that drops what floor says is settled; floor
// nil keeps every entry.
func newCIDOrder(floor func(ctx context.Context) (uint64, error), log *zap.Logger) *cidOrder {
	if log == nil {
		log = zap.NewNop()
	}
	return &cidOrder{floor: floor, log: log, minPrune: minPruneAt, pruneAt: minPruneAt,
		last: map[string]uint64{}, locks: map[string]*cidLock{}}
}

// do runs fn for the event at stream sequence seq about c, unless an event
// with a later sequence about c was handled already; it reports whether fn
// ran. seq 0 (unknown) always runs.
func (o *cidOrder) do(ctx context.Context, c string, seq uint64, fn func() error) (bool, error) {
	o.mu.Lock()
	l := o.locks[c]
	if l == nil {
		l = &cidLock{}
		o.locks[c] = l
	}
	l.users++
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		if l.users--; l.users == 0 {
			delete(o.locks, c)
		}
		o.mu.Unlock()
	}()
	l.Lock()
	defer l.Unlock()
	o.mu.Lock()
	stale := seq != 0 && o.last[c] > seq
	o.mu.Unlock()
	if stale {
		return false, nil
	}
	if err := fn(); err != nil {
		return true, err
	}
	if seq != 0 {
		o.mu.Lock()
		if seq > o.last[c] {
			o.last[c] = seq
		}
		o.mu.Unlock()
		o.prune(ctx)
	}
	return true, nil
}

// prune drops the entries the consumer's ack floor shows settled, once
// there are pruneAt of them; one handler at a time asks.
func (o *cidOrder) prune(ctx context.Context) {
	o.mu.Lock()
	if o.floor == nil || o.pruning || len(o.last) < o.pruneAt {
		o.mu.Unlock()
		return
	}
	o.pruning = true
	o.mu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, floorTimeout)
	floor, err := o.floor(fctx)
	cancel()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pruning = false
	before := len(o.last)
	if err == nil {
		for c, seq := range o.last {
			if seq <= floor {
				delete(o.last, c)
			}
		}
	}
	o.pruneAt = max(o.minPrune, 2*len(o.last))
	if err != nil {
		o.log.Warn("cannot read the consumer's ack floor; the event order keeps its entries until the next try",
			zap.Int("entries", before), zap.Int("next_try_at", o.pruneAt), zap.Error(err))
		return
	}
	o.log.Debug("event order pruned", zap.Uint64("ack_floor", floor), zap.Int("before", before), zap.Int("after", len(o.last)))
}

// size is how many CIDs the order remembers a sequence for.
func (o *cidOrder) size() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.last)
}

// retire handles one "retired" event: prune removed the path from the
// binary cache, so this mirror unpins its CID (kubo's repo GC frees the
// blocks later), unless the mirror keeps retired NARs (--keep-retired, an
// archive). seq is the event's stream sequence, 0 if unknown. Whatever else
// a mirror holds for a retired path is let go here too.
func (w *Worker) retire(ctx context.Context, ev *events.Retired, seq uint64) error {
	log := w.pinner.log.With(zap.String("store_path", ev.StorePath), zap.String("cid", ev.CID),
		zap.String("event_id", ev.ID))
	if err := w.forgetNarinfo(ctx, ev, seq, log); err != nil {
		return err
	}
	if ev.CID == "" {
		// The path had no CID of its own to let go (none recorded, or
		// another path still in the cache shares the NAR).
		log.Debug("retired path without a CID to unpin")
		return nil
	}
	c, err := cid.Decode(ev.CID)
	if err != nil {
		return errs.Errorf(errs.Invalid, "retired event %s: cid %q: %v", ev.ID, ev.CID, err)
	}
	if w.keepRetired {
		log.Info("retired; kept (--keep-retired)", zap.String("reason", ev.Reason))
		return nil
	}
	ran, err := w.order.do(ctx, c.String(), seq, func() error {
		if err := w.pinner.node.Unpin(ctx, c); err != nil {
			return errs.E(errs.Transient, fmt.Errorf("unpin retired %s (%s): %w", c, ev.StorePath, err))
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case !ran:
		log.Info("retired event older than a later publish of the same CID; kept pinned")
	default:
		log.Info("retired; unpinned", zap.String("reason", ev.Reason), zap.Int64("nar_size", ev.NarSize))
	}
	return nil
}
