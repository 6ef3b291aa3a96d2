package mirror

import (
	"context"
	"fmt"
	"sync"

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
type cidOrder struct {
	mu    sync.Mutex
	last  map[string]uint64
	locks map[string]*cidLock
}

type cidLock struct {
	sync.Mutex
	users int
}

func newCIDOrder() *cidOrder {
	return &cidOrder{last: map[string]uint64{}, locks: map[string]*cidLock{}}
}

// do runs fn for the event at stream sequence seq about c, unless an event
// with a later sequence about c was handled already; it reports whether fn
// ran. seq 0 (unknown) always runs.
func (o *cidOrder) do(c string, seq uint64, fn func() error) (bool, error) {
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
	}
	return true, nil
}

// Retire handles one "retired" event: prune removed the path from the
// binary cache, so this mirror unpins its CID (kubo's repo GC frees the
// blocks later), unless the mirror keeps retired NARs (--keep-retired, an
// archive). seq is the event's stream sequence, 0 if unknown. Whatever else
// a mirror holds for a retired path is let go here too.
func (w *Worker) Retire(ctx context.Context, ev *events.Retired, seq uint64) error {
	log := w.Pinner.log.With(zap.String("store_path", ev.StorePath), zap.String("cid", ev.CID),
		zap.String("event_id", ev.ID))
	if err := w.forgetNarinfo(ev, seq, log); err != nil {
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
	if w.KeepRetired {
		log.Info("retired; kept (--keep-retired)", zap.String("reason", ev.Reason))
		return nil
	}
	ran, err := w.order.do(c.String(), seq, func() error {
		if err := w.Pinner.node.Unpin(ctx, c); err != nil {
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
