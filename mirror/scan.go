package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// scanIdle is how long scan waits for the next message before it asks the
// server whether any are left (some may have aged out while it read).
const scanIdle = 15 * time.Second

// scan reads, in stream order, the messages that cfg selects and that were
// in the stream when it began; later ones are left for the next run. It
// calls onTotal with their number first, then fn with each; an error from
// fn stops the scan and is returned.
func scan(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig,
	onTotal func(uint64), fn func(jetstream.Msg) error) error {
	if _, err := js.Stream(ctx, stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return errs.Errorf(errs.Invalid, "stream %s does not exist on this NATS (nothing was ever published, or --stream names another)", stream)
		}
		return errs.E(errs.Transient, fmt.Errorf("stream %s: %w", stream, err))
	}
	c, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return errs.E(errs.Transient, fmt.Errorf("read stream %s: %w", stream, err))
	}
	info, err := c.Info(ctx)
	if err != nil {
		return errs.E(errs.Transient, fmt.Errorf("read stream %s: %w", stream, err))
	}
	total := info.NumPending
	onTotal(total)
	if total == 0 {
		return nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return errs.E(errs.Transient, fmt.Errorf("read stream %s: %w", stream, err))
	}
	defer it.Stop()
	for got := uint64(0); got < total; {
		nctx, cancel := context.WithTimeout(ctx, scanIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				if info, ierr := c.Info(ctx); ierr == nil && info.NumPending == 0 {
					return nil // the rest was removed by the stream's limits
				}
				continue
			}
			return errs.E(errs.Transient, fmt.Errorf("read stream %s: %w", stream, err))
		}
		got++
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}
