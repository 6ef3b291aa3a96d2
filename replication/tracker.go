package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// subjects is what a Tracker reads: the whole stream, as one filter, the
// events it does not fold skipped as they come. One filter keeps the
// consumer's create request naming it, so a NATS user that may only read
// (deploy/nats/nats-server.conf's status user) can be granted exactly
// that; a consumer of several filters is created on a subject that names
// none.
const subjects = events.SubjectPrefix + ">"

// Tracker keeps a State current with the stream: each Update reads only
// the events stored since the last one. It is safe for concurrent use.
type Tracker struct {
	js     jetstream.JetStream
	stream string
	log    *zap.Logger

	mu    sync.Mutex
	state *State
	next  uint64 // the first stream sequence not yet read
}

// NewTracker returns a Tracker of stream ("" is events.DefaultStream)
// that has read nothing yet.
func NewTracker(js jetstream.JetStream, stream string, log *zap.Logger) *Tracker {
	if stream == "" {
		stream = events.DefaultStream
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Tracker{js: js, stream: stream, log: log, state: NewState(), next: 1}
}

// Update reads the events stored since the last Update.
func (t *Tracker) Update(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subjects}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: t.next, InactiveThreshold: 10 * time.Second}
	return events.Scan(ctx, t.js, t.stream, events.ScanOptions{Consumer: cfg}, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return errs.E(errs.Transient, err)
		}
		t.next = meta.Sequence.Stream + 1
		if !folded(m.Subject()) {
			return nil
		}
		ev, err := events.Decode(m.Data())
		if err != nil {
			t.log.Debug("ignoring an invalid event", zap.String("subject", m.Subject()), zap.Error(err))
			return nil
		}
		// Only a mirror's own subject counts as its confirmation, as
		// nix-ipfs gc has it: NATS permissions let a mirror publish there
		// and nowhere else.
		if p, ok := ev.(*events.Pinned); ok && m.Subject() != events.SubjectPinned(p.Mirror) {
			t.log.Debug("ignoring a pinned event on another mirror's subject", zap.String("subject", m.Subject()))
			return nil
		}
		t.state.Apply(ev)
		return nil
	})
}

// folded reports whether State.Apply uses the events of subject.
func folded(subject string) bool {
	switch subject {
	case events.SubjectBuilt, events.SubjectPublished, events.SubjectRetired:
		return true
	}
	return strings.HasPrefix(subject, events.SubjectPinnedPrefix)
}

// Read calls fn with the State, under the Tracker's lock: fn must not keep
// it.
func (t *Tracker) Read(fn func(*State)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fn(t.state)
}

// Check updates and checks roots' closure against k mirrors.
func (t *Tracker) Check(ctx context.Context, roots []string, k int) (*Closure, error) {
	if err := t.Update(ctx); err != nil {
		return nil, err
	}
	var c *Closure
	t.Read(func(s *State) { c = s.Check(roots, k) })
	return c, nil
}

// ErrNotReplicated is returned by Wait when ctx ends first.
var ErrNotReplicated = errors.New("not replicated")

// Wait checks roots' closure every `every` until it is replicated on k
// mirror nodes or ctx ends. It returns the last check; when ctx ended
// first the error wraps ErrNotReplicated (and ctx's error). A stream that
// does not answer is retried until ctx ends: a wait outlives a NATS
// restart.
func (t *Tracker) Wait(ctx context.Context, roots []string, k int, every time.Duration) (*Closure, error) {
	var last *Closure
	var lastErr error
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if last == nil && lastErr != nil {
				return nil, fmt.Errorf("%w: %v (%v)", ErrNotReplicated, ctx.Err(), lastErr)
			}
			return last, fmt.Errorf("%w: %w", ErrNotReplicated, ctx.Err())
		case <-tick.C:
		}
		c, err := t.Check(ctx, roots, k)
		switch {
		case err == nil:
			last, lastErr = c, nil
			if c.Replicated {
				return c, nil
			}
		case ctx.Err() != nil:
			continue // reported above
		case errs.Is(err, errs.Transient):
			lastErr = err
			t.log.Warn("reading the stream failed; retrying", zap.Error(err))
		default:
			return last, err
		}
		tick.Reset(every)
	}
}

// WriteText writes, per path, which mirrors hold it, and what is missing.
func (c *Closure) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE PATH\tMIRRORS\tSTATE")
	for _, p := range c.Paths {
		names := make([]string, 0, len(p.Mirrors))
		for _, h := range p.Mirrors {
			names = append(names, h.Mirror)
		}
		m := strings.Join(names, ",")
		if m == "" {
			m = "-"
		}
		state := "replicated"
		if !p.Replicated {
			state = "missing: " + p.Why(c.K)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.StorePath, m, state)
	}
	tw.Flush()
	missing := len(c.Missing())
	if c.Replicated {
		fmt.Fprintf(w, "closure of %s: all %d paths on at least %d mirror(s)\n", strings.Join(c.Roots, " "), len(c.Paths), c.K)
	} else {
		fmt.Fprintf(w, "closure of %s: %d of %d paths not yet on %d mirror(s)\n", strings.Join(c.Roots, " "), missing, len(c.Paths), c.K)
	}
}
