package mirror

import (
	"context"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
)

// forgetNarinfo removes a retired path's narinfo from the mirror's own
// cache (--cache-dir), so the mirror stops offering what the origin no
// longer does, --keep-retired or not: the cache mirrors the origin's cache,
// while --keep-retired only decides about the blocks. Under the CID's
// order, so that a later publish of the same NAR keeps its narinfo.
func (w *Worker) forgetNarinfo(ctx context.Context, ev *events.Retired, seq uint64, log *zap.Logger) error {
	if w.cache == nil {
		return nil
	}
	remove := func() error { return w.cache.Remove(ev.StorePath) }
	if ev.CID == "" {
		return remove()
	}
	ran, err := w.order.do(ctx, ev.CID, seq, remove)
	if err == nil && ran {
		log.Debug("retired; narinfo removed from the mirror's cache")
	}
	return err
}
