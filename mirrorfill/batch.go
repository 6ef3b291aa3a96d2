package mirrorfill

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/mirror"
)

// batch pins many items with bounded concurrency, retrying each a few times
// with backoff: the part replay and backfill share.
type batch struct {
	pinner   *mirror.Pinner
	attempts int
	backoff  []time.Duration
	progress Progress
	log      *zap.Logger

	sem chan struct{}
	wg  sync.WaitGroup

	mu    sync.Mutex
	tally Tally
}

func newBatch(p *mirror.Pinner, cfg mirror.PinConfig, progress Progress, log *zap.Logger) *batch {
	if progress == nil {
		progress = noProgress{}
	}
	return &batch{
		pinner: p, attempts: cfg.MaxAttempts, backoff: cfg.Backoff, progress: progress, log: log,
		sem: make(chan struct{}, max(cfg.Concurrency, 1)),
	}
}

// goDo runs work in a goroutine once a slot is free, records its outcome,
// then calls after with it (and whether the item is settled for good: a
// later run need not see it again). It returns false, without running work,
// once ctx is done. An item cut short by ctx is neither counted nor
// reported: it was not done.
func (b *batch) goDo(ctx context.Context, work func(ctx context.Context) (Outcome, bool), after func(o Outcome, settled bool)) bool {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	b.wg.Add(1)
	go func() {
		defer func() { <-b.sem; b.wg.Done() }()
		o, settled := work(ctx)
		if ctx.Err() != nil && o == OutFailed {
			return
		}
		b.step(o)
		if after != nil {
			after(o, settled)
		}
	}()
	return true
}

// step counts an outcome that needed no work.
func (b *batch) step(o Outcome) {
	b.mu.Lock()
	b.tally.add(o)
	b.mu.Unlock()
	b.progress.Step(o)
}

func (b *batch) wait() Tally {
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tally
}

// pin pins it, retrying what may heal. settled is true when the item needs
// no later run: pinned, or refused for good (invalid or corrupt).
func (b *batch) pin(ctx context.Context, it mirror.Item) (o Outcome, settled bool) {
	log := b.log.With(zap.String("cid", it.CID.String()), zap.String("store_path", it.StorePath))
	return b.try(ctx, log, func(ctx context.Context) (Outcome, error) { return b.pinOnce(ctx, it) })
}

func (b *batch) pinOnce(ctx context.Context, it mirror.Item) (Outcome, error) {
	r, err := b.pinner.Pin(ctx, it)
	switch {
	case err != nil:
		return OutFailed, err
	case r.Fresh:
		return OutPinned, nil
	default:
		return OutAlready, nil
	}
}

// try runs do until it succeeds, fails for good (an Invalid or Corrupt
// error) or has failed b.attempts times, waiting b.backoff between tries.
func (b *batch) try(ctx context.Context, log *zap.Logger, do func(ctx context.Context) (Outcome, error)) (o Outcome, settled bool) {
	for attempt := 1; ; attempt++ {
		o, err := do(ctx)
		if err == nil {
			return o, true
		}
		if ctx.Err() != nil {
			return OutFailed, false
		}
		switch {
		case errs.Is(err, errs.Invalid):
			log.Error("cannot pin: invalid", zap.Error(err))
			return OutFailed, true
		case errs.Is(err, errs.Corrupt):
			log.Error("refused: corrupt", zap.Error(err))
			return OutFailed, true
		case attempt >= b.attempts:
			log.Error("cannot pin; giving up on it for this run", zap.Int("attempts", attempt), zap.Error(err))
			return OutFailed, false
		}
		delay := events.BackoffFor(b.backoff, uint64(attempt))
		log.Warn("pin failed; will retry", zap.Error(err), zap.String("kind", errs.KindOf(err).String()),
			zap.Int("attempt", attempt), zap.Duration("retry_in", delay))
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return OutFailed, false
		}
	}
}
