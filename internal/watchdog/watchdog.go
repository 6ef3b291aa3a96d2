// Package watchdog bounds the pauses of a transfer rather than its
// length: a context cancelled once a given time passes without progress,
// which for a NAR of gigabytes is the bound that makes sense.
package watchdog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrStalled is the cause of a Watchdog's context once it fired.
var ErrStalled = errors.New("no progress")

// Watchdog cancels a context once it has gone d without progress.
type Watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	d      time.Duration
}

// New returns a Watchdog whose context, derived from ctx, is cancelled
// with ErrStalled once d passes without Progress. Stop releases it.
func New(ctx context.Context, d time.Duration) *Watchdog {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &Watchdog{ctx: ctx, cancel: cancel, d: d}
	w.timer = time.AfterFunc(d, func() { cancel(fmt.Errorf("%w for %v", ErrStalled, d)) })
	return w
}

// Progress restarts the countdown.
func (w *Watchdog) Progress() { w.timer.Reset(w.d) }

// Pause stops the countdown while the other side (a slow client) is the
// one holding things up.
func (w *Watchdog) Pause() { w.timer.Stop() }

// Stalled reports whether the watchdog fired.
func (w *Watchdog) Stalled() bool { return errors.Is(context.Cause(w.ctx), ErrStalled) }

// Context is cancelled when the watchdog fires, at Stop, or with its parent.
func (w *Watchdog) Context() context.Context { return w.ctx }

// Stop stops the countdown and cancels the context.
func (w *Watchdog) Stop() {
	w.timer.Stop()
	w.cancel(context.Canceled)
}

// Reader counts every byte read from r as progress.
func (w *Watchdog) Reader(r io.Reader) io.Reader { return &progressReader{r: r, w: w} }

type progressReader struct {
	r io.Reader
	w *Watchdog
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.w.Progress()
	}
	return n, err
}
