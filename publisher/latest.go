package publisher

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/latest"
)

// RecordLatest makes the build ev reported (at stream sequence seq) its
// job's latest, once HandleBuilt published its whole closure: a signed
// document in the cache (nix-ipfs-latest/<job>.json) unless the cache
// holds a newer build of the job, and a "latest" event that carries it to
// the mirrors' caches. A job whose name cannot be a file name (a
// derivation name with '?' or '=') gets none, with a debug line. Safe to
// run twice: the same document is written and announced with the same id.
func (p *Publisher) RecordLatest(ctx context.Context, ev *events.Built, seq uint64) error {
	job := latest.JobOf(ev)
	if latest.ValidJob(job) != nil {
		p.log.Debug("no latest-build document: the job's name cannot name one", zap.String("job", job), zap.String("event_id", ev.ID))
		return nil
	}
	doc := latest.New(job, ev.Time, seq, ev.DrvPath, ev.HydraBuild, ev.OutPaths)
	if err := doc.Sign(p.opt.Key); err != nil {
		return errs.E(errs.Config, err)
	}
	raw, err := doc.Marshal()
	if err != nil {
		return fmt.Errorf("latest-build document of %s: %w", job, err)
	}
	inPlace, err := latest.Keep(p.opt.Cache, raw)
	if err != nil {
		return fmt.Errorf("latest-build document of %s: %w", job, err)
	}
	if !inPlace {
		// An older build replayed: the newer stays, announced when it
		// was written.
		return nil
	}
	// Announced even when it was in place already: a redelivery after a
	// failed announce must not leave the mirrors without it (the stream
	// drops the duplicate within its window; a mirror keeps it once).
	lev := &events.Latest{Host: p.opt.Host, StoreDir: p.store.StoreDir(), Job: job, Document: string(raw)}
	if lev.Host == "" {
		lev.Host = "unknown"
	}
	events.Seal(lev)
	if _, err := events.Publish(ctx, p.js, events.SubjectLatest, lev); err != nil {
		return err
	}
	p.log.Info("latest build of the job recorded", zap.String("job", job), zap.Strings("outputs", doc.Outputs),
		zap.String("event_id", ev.ID))
	return nil
}
