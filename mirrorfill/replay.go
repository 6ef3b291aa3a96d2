package mirrorfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
)

// ReplayConfig is replay's settings.
type ReplayConfig struct {
	NATS             config.NATS
	Log              config.Log
	Pin              mirror.PinConfig
	Mirror           string
	All              bool
	FromSeq          uint64
	Since            string
	Resume           bool
	StateFile        string
	Progress         string
	ProgressInterval time.Duration
	Announce         config.Strings

	since time.Time
}

// Register adds replay's flags.
func (c *ReplayConfig) Register(s *config.Set) {
	c.NATS.Register(s)
	c.Log.Register(s, "console")
	c.Pin.Register(s, "the mirror's node, the one to fill")
	s.StringVar(&c.Mirror, "mirror", "", "the mirror's name (required): its pinned events go to nixipfs.pinned.NAME, its state file is replay-NAME.seq")
	s.BoolVar(&c.All, "all", false, "replay every published event in the stream")
	s.Uint64Var(&c.FromSeq, "from-seq", 0, "replay from this stream sequence number on")
	s.StringVar(&c.Since, "since", "", "replay events published since this time: RFC 3339 (2025-01-31T12:00:00Z), a date (2025-01-31, UTC), or a duration meaning that long ago (36h)")
	s.BoolVar(&c.Resume, "resume", false, "continue after the last sequence the state file records; with --all, --from-seq or --since, those apply when there is no state file yet")
	s.StringVar(&c.StateFile, "state-file", "", "where progress is recorded (default $XDG_STATE_HOME/nix-ipfs/replay-NAME.seq, else ~/.local/state/nix-ipfs/replay-NAME.seq)")
	s.StringVar(&c.Progress, "progress", ProgressAuto, "progress display on stderr: auto (a bar on a terminal, lines otherwise), bar, lines or none")
	s.DurationVar(&c.ProgressInterval, "progress-interval", 5*time.Second, "how often --progress=lines prints a line")
	s.StringsVar(&c.Announce, "announce-addr", mirror.AnnounceUsage)
}

// Validate checks the settings and fills in defaults from the environment.
func (c *ReplayConfig) Validate(getenv func(string) string) error {
	if err := mirror.ValidateName("--mirror", c.Mirror); err != nil {
		return err
	}
	if err := mirror.ValidateAnnounce(c.Announce); err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{c.All, c.FromSeq > 0, c.Since != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("--all, --from-seq and --since choose where to start: give one")
	}
	if n == 0 && !c.Resume {
		return errors.New("say what to replay: --all, --from-seq N, --since TIME, or --resume")
	}
	if c.Since != "" {
		t, err := parseSince(c.Since, time.Now())
		if err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		c.since = t
	}
	if c.StateFile == "" {
		f, err := defaultStateFile(getenv, c.Mirror)
		if err != nil {
			return err
		}
		c.StateFile = f
	}
	if _, err := NewProgress(c.Progress, io.Discard, "", 0); err != nil {
		return err
	}
	return c.Pin.Validate()
}

// parseSince reads a time: RFC 3339, a date (midnight UTC), or a duration
// before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time, a date (YYYY-MM-DD) or a duration (36h)", s)
}

// ReplayOptions say what Replay replays.
type ReplayOptions struct {
	Stream string
	// StartSeq, else StartTime, else the beginning of the stream.
	StartSeq  uint64
	StartTime time.Time
	// StateFile, if set, records the sequence up to which every event is
	// handled, as it advances.
	StateFile string
	Pin       mirror.PinConfig
	Progress  Progress
	Logger    *zap.Logger
}

// ReplaySummary is what a replay did.
type ReplaySummary struct {
	Tally
	// Total is how many events the range held when the replay began.
	Total uint64
	// Mark is the stream sequence up to which every event is handled.
	Mark uint64
}

// stateEvery bounds how often the state file is rewritten.
const stateEvery = time.Second

// Replay pins the CIDs of the "published" events in a range of the stream
// with p, concurrently, and records its progress. It returns an error
// when it was interrupted or some CIDs could not be pinned; a run with the
// state file's sequence as its start then retries what is left.
func Replay(ctx context.Context, js jetstream.JetStream, p *mirror.Pinner, o ReplayOptions) (ReplaySummary, error) {
	if o.Stream == "" {
		o.Stream = events.DefaultStream
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Progress == nil {
		o.Progress = noProgress{}
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPublished}}
	var mark uint64
	switch {
	case o.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.StartSeq
		mark = o.StartSeq - 1
	case !o.StartTime.IsZero():
		t := o.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	// What prune retired, and when: a CID retired after it was published
	// is not pinned again, unless a later event published it again.
	retired, err := retiredCIDs(ctx, js, o.Stream)
	if err != nil {
		return ReplaySummary{}, err
	}
	wm := newWatermark(mark)
	b := newBatch(p, o.Pin, o.Progress, o.Logger)

	var stateMu sync.Mutex
	var saved uint64
	var lastSave time.Time
	save := func(force bool) {
		if o.StateFile == "" {
			return
		}
		stateMu.Lock()
		defer stateMu.Unlock()
		m := wm.value()
		if m == saved || m == 0 || (!force && time.Since(lastSave) < stateEvery) {
			return
		}
		if err := writeState(o.StateFile, m); err != nil {
			o.Logger.Warn("cannot record progress", zap.String("state_file", o.StateFile), zap.Error(err))
			return
		}
		saved, lastSave = m, time.Now()
	}

	var sum ReplaySummary
	started := false
	onTotal := func(total uint64) {
		// A later call raises the estimate (events.ScanOptions.OnTotal):
		// the summary takes it, the display keeps its first.
		sum.Total = total
		if !started {
			o.Progress.Start(int64(total))
			started = true
		}
	}
	scanErr := events.Scan(ctx, js, o.Stream, events.ScanOptions{Consumer: cfg, OnTotal: onTotal}, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return errs.E(errs.Transient, fmt.Errorf("message without metadata: %w", err))
		}
		seq := meta.Sequence.Stream
		ev, err := events.Decode(m.Data())
		var it mirror.Item
		if err == nil {
			if pe, ok := ev.(*events.Published); ok {
				it, err = mirror.FromPublished(pe)
			} else {
				err = errs.Errorf(errs.Invalid, "a %s event on %s", events.Head(ev).Type, m.Subject())
			}
		}
		wm.add(seq)
		if err == nil && retired[it.CID.String()] > seq {
			o.Logger.Debug("skipping a CID the stream retired later", zap.Uint64("stream_seq", seq),
				zap.String("cid", it.CID.String()), zap.String("store_path", it.StorePath))
			b.step(OutSkipped)
			wm.done(seq)
			save(false)
			return nil
		}
		if err != nil {
			// It never becomes valid: count it and move on.
			o.Logger.Warn("skipping an invalid event", zap.Uint64("stream_seq", seq), zap.Error(err))
			b.step(OutSkipped)
			wm.done(seq)
			save(false)
			return nil
		}
		if !b.goDo(ctx, func(ctx context.Context) (Outcome, bool) { return b.pin(ctx, it) },
			func(_ Outcome, settled bool) {
				if settled {
					wm.done(seq)
					save(false)
				}
			}) {
			return ctx.Err()
		}
		return nil
	})
	sum.Tally = b.wait()
	save(true)
	sum.Mark = wm.value()
	if started {
		o.Progress.Finish()
	}
	switch {
	case ctx.Err() != nil:
		return sum, fmt.Errorf("interrupted after %d of %d events (%s); every event up to stream sequence %d is done: run again with --resume to continue",
			sum.Done(), sum.Total, sum.Tally, sum.Mark)
	case scanErr != nil:
		return sum, scanErr
	case sum.Failed > 0:
		return sum, fmt.Errorf("%d of %d CIDs could not be pinned (see the log); run again with --resume to retry them", sum.Failed, sum.Total)
	}
	if err := mirror.PinLatestRoot(ctx, js, o.Stream, p, o.Logger); err != nil {
		return sum, err
	}
	return sum, nil
}

// RunReplay runs a replay as the CLI does: it connects, resolves where to
// start from the flags and the state file, shows progress on progressOut,
// and writes the summary to out.
func RunReplay(ctx context.Context, cfg ReplayConfig, log *zap.Logger, out, progressOut io.Writer) error {
	nc, js, err := cfg.NATS.ConnectOnce("nix-ipfs replay " + cfg.Mirror)
	if err != nil {
		return err
	}
	defer nc.Close()
	kubo, err := dialKubo(ctx, cfg.Pin.KuboAPI)
	if err != nil {
		return err
	}
	o := ReplayOptions{Stream: cfg.NATS.Stream, StateFile: cfg.StateFile, Pin: cfg.Pin, Logger: log}
	switch {
	case cfg.FromSeq > 0:
		o.StartSeq = cfg.FromSeq
	case !cfg.since.IsZero():
		o.StartTime = cfg.since
	}
	if cfg.Resume {
		seq, ok, err := ReadState(cfg.StateFile)
		if err != nil {
			return err
		}
		switch {
		case ok:
			o.StartSeq, o.StartTime = seq+1, time.Time{}
			log.Info("resuming", zap.String("state_file", cfg.StateFile), zap.Uint64("from_seq", o.StartSeq))
		case !cfg.All && cfg.FromSeq == 0 && cfg.since.IsZero():
			return errs.Errorf(errs.Invalid, "--resume: no state file %s yet: start with --all, --from-seq or --since", cfg.StateFile)
		}
	}
	label := "replay " + cfg.Mirror
	progress, err := NewProgress(cfg.Progress, progressOut, label, cfg.ProgressInterval)
	if err != nil {
		return err
	}
	o.Progress = progress
	cache, err := cfg.Pin.OpenCache()
	if err != nil {
		return err
	}
	p := mirror.NewPinner(kubo, mirror.PinnerOptions{
		Mirror: cfg.Mirror, Announce: cfg.Announce, JS: js, Verify: cfg.Pin.Verify, PinTimeout: cfg.Pin.PinTimeout, PinStall: cfg.Pin.PinStall, PinHedge: cfg.Pin.PinHedge,
		Logger: log.With(zap.String("mirror", cfg.Mirror)), OnPin: mirror.RecordPin, QuietPins: true,
		Cache: cache,
	})
	sum, err := Replay(ctx, js, p, o)
	if err == nil && cache != nil {
		err = KeepLatestDocs(ctx, js, o.Stream, cache, log)
	}
	if sum.Total == 0 && err == nil {
		fmt.Fprintf(out, "%s: nothing to replay\n", label)
		return nil
	}
	fmt.Fprintf(out, "%s: %d events: %s; done up to stream sequence %d (state file %s)\n",
		label, sum.Total, sum.Tally, sum.Mark, cfg.StateFile)
	return err
}

// KeepLatestDocs writes every job's latest-build document the stream holds
// ("latest" events, oldest first) into a mirror's cache, the newest build
// of each job winning: a replayed mirror serves them as the origin does.
// An invalid document is skipped with a warning.
func KeepLatestDocs(ctx context.Context, js jetstream.JetStream, stream string, cache *mirrorcache.Cache, log *zap.Logger) error {
	if stream == "" {
		stream = events.DefaultStream
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectLatest}, DeliverPolicy: jetstream.DeliverAllPolicy}
	err := events.Scan(ctx, js, stream, events.ScanOptions{Consumer: cfg}, func(m jetstream.Msg) error {
		ev, err := events.Decode(m.Data())
		if err == nil {
			if l, ok := ev.(*events.Latest); ok {
				err = mirror.KeepLatest(cache, l)
			}
		}
		if errs.Is(err, errs.Invalid) || errs.Is(err, errs.Corrupt) {
			log.Warn("skipping a latest-build document", zap.String("subject", m.Subject()), zap.Error(err))
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("read latest-build documents: %w", err)
	}
	return nil
}

// retiredCIDs reads every "retired" event in the stream and returns, for
// each CID, the stream sequence of its last retirement.
func retiredCIDs(ctx context.Context, js jetstream.JetStream, stream string) (map[string]uint64, error) {
	out := map[string]uint64{}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectRetired}, DeliverPolicy: jetstream.DeliverAllPolicy}
	err := events.Scan(ctx, js, stream, events.ScanOptions{Consumer: cfg}, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return errs.E(errs.Transient, fmt.Errorf("message without metadata: %w", err))
		}
		ev, err := events.Decode(m.Data())
		if err != nil {
			return nil // an invalid event retires nothing
		}
		if r, ok := ev.(*events.Retired); ok && r.CID != "" {
			out[r.CID] = max(out[r.CID], meta.Sequence.Stream)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read retired events: %w", err)
	}
	return out, nil
}

// dialKubo dials a node for a command that runs once, and checks that it
// answers.
func dialKubo(ctx context.Context, api string) (*ipfs.Kubo, error) {
	k, err := ipfs.Dial(api)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := k.Ping(pctx); err != nil {
		return nil, fmt.Errorf("kubo does not answer: %w", err)
	}
	return k, nil
}
