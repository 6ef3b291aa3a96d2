package mirror

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// rootPinName is the kubo pin name of the cache root a mirror holds.
const rootPinName = "nix-ipfs-cache-root"

// rootPins lists pins by name; *ipfs.Kubo has it. A node without it (the
// unit tests' fake) is trusted to the roots this process pinned.
type rootPins interface {
	PinsNamed(ctx context.Context, name string) ([]cid.Cid, error)
}

// rootUpdater moves a pin; *ipfs.Kubo has it.
type rootUpdater interface {
	PinUpdate(ctx context.Context, from, to cid.Cid) error
}

var (
	_ rootPins    = (*ipfs.Kubo)(nil)
	_ rootUpdater = (*ipfs.Kubo)(nil)
)

// rootState is the latest cache root a mirror pinned.
type rootState struct {
	mu   sync.Mutex
	seq  uint64
	root cid.Cid
}

// pinRoot handles a "cacheroot" event: it pins the announced root of the
// cache as a UnixFS directory (the narinfos and the links to every NAR, so
// this node's gateway serves the whole cache at /ipfs/<root>) in place of
// the root it held before (kubo's pin update, which walks only what
// differs). An event older than the root pinned last is skipped. The NARs
// are pinned already, one by one, so a new root costs the blocks of the
// narinfos and directories that changed.
func (w *Worker) pinRoot(ctx context.Context, ev *events.CacheRoot, seq uint64) error {
	c, err := cid.Decode(ev.Root)
	if err != nil {
		return errs.Errorf(errs.Invalid, "cacheroot event %s: root %q: %v", ev.ID, ev.Root, err)
	}
	w.roots.mu.Lock()
	defer w.roots.mu.Unlock()
	log := w.pinner.log.With(zap.String("root", ev.Root), zap.String("event_id", ev.ID))
	if seq != 0 && seq < w.roots.seq {
		log.Debug("cache root older than the one pinned; skipped")
		return nil
	}
	var providers []ipfs.Node
	if ev.Publisher.PeerID != "" {
		providers = []ipfs.Node{{PeerID: ev.Publisher.PeerID, Addrs: ev.Publisher.Addrs}}
	}
	pctx, cancel := context.WithTimeout(ctx, w.pinner.opt.PinTimeout)
	defer cancel()
	for _, n := range providers {
		w.pinner.connect(pctx, log, n)
	}
	// The roots pinned before: kubo's word for it once, at the first root
	// this process handles (a root pinned by an earlier run, a replay, a
	// crash between pin and unpin); from then on the one this process
	// pinned. Asking kubo every time walks its whole pin set: at a million
	// pins, seconds of kubo's time per cache root event
	// (docs/BENCHMARKS.md, "Scale").
	var old []cid.Cid
	if rp, ok := w.pinner.node.(rootPins); ok && !w.roots.root.Defined() {
		if old, err = rp.PinsNamed(ctx, rootPinName); err != nil {
			return err
		}
	} else if w.roots.root.Defined() {
		old = append(old, w.roots.root)
	}
	// pin update walks only what changed (0.16 s against 10 s for pinning
	// a root of 100,000 paths anew, docs/BENCHMARKS.md) and keeps the name.
	moved := false
	if up, ok := w.pinner.node.(rootUpdater); ok && len(old) > 0 && !slices.ContainsFunc(old, c.Equals) {
		if err := up.PinUpdate(pctx, old[0], c); err != nil {
			log.Warn("pin update of the cache root failed; pinning it anew", zap.Error(err))
		} else {
			moved, old = true, old[1:]
		}
	}
	if !moved {
		if err := w.pinner.node.Pin(pctx, c, rootPinName); err != nil {
			w.pinner.forget(providers)
			return fmt.Errorf("pin cache root %s: %w", c, err)
		}
	}
	for _, o := range old {
		if o.Equals(c) {
			continue
		}
		if err := w.pinner.node.Unpin(ctx, o); err != nil {
			return fmt.Errorf("unpin the previous cache root %s: %w", o, err)
		}
	}
	w.roots.root, w.roots.seq = c, seq
	log.Info("cache root pinned", zap.Bool("pin_updated", moved))
	return nil
}

// PinLatestRoot pins with p the last cache root the stream announced, if
// any, as the mirror worker would: a node filled by replay then serves the
// cache as a directory too. The stream leader answers, so a cluster member
// still catching up cannot hand back an older root.
func PinLatestRoot(ctx context.Context, js jetstream.JetStream, stream string, p *Pinner, log *zap.Logger) error {
	m, err := events.LastMsg(ctx, js, stream, events.SubjectCacheRoot)
	if err != nil {
		return fmt.Errorf("read the last cache root: %w", err)
	}
	if m == nil {
		return nil
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		log.Warn("the last cacheroot event is invalid; no root pinned", zap.Error(err))
		return nil
	}
	root, ok := ev.(*events.CacheRoot)
	if !ok {
		return nil
	}
	return NewWorker(p, WorkerOptions{}).pinRoot(ctx, root, m.Sequence)
}
