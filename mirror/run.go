package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	sharedmetrics "github.com/nix-ipfs/nix-ipfs/internal/metrics"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// Config is the mirror worker's settings.
type Config struct {
	NATS    config.NATS
	Log     config.Log
	Pin     PinConfig
	Name    string
	AckWait time.Duration
	// KeepRetired keeps the CIDs of retired paths pinned: an archive.
	KeepRetired bool
	// Announce are the addresses clients should dial this mirror on.
	Announce config.Strings
	// Listen, if set, serves the mirror's cache (Pin.CacheDir) there.
	Listen string
}

// Register adds the mirror's flags.
func (c *Config) Register(s *config.Set) {
	c.NATS.Register(s)
	c.Log.Register(s, "json")
	c.Pin.Register(s, "this mirror's node")
	s.StringVar(&c.Name, "name", "", "this mirror's name (required): its durable consumer is mirror-NAME, so each mirror gets every event (a new name starts with the whole history); its pinned events go to nixipfs.pinned.NAME")
	s.StringVar(&c.Listen, "listen", "", "serve the mirror's cache (--cache-dir) to stock Nix on this address (host:port): nix-cache-info, the narinfos as the origin wrote them, NARs from this kubo checked against their NarHash (empty: do not serve)")
	s.DurationVar(&c.AckWait, "ack-wait", 60*time.Second,
		"redeliver an event whose mirror went silent this long (a running pin reports progress every third of it)")
	s.BoolVar(&c.KeepRetired, "keep-retired", false,
		"keep pinning what prune retired from the cache (an archive mirror); by default a retired path's CID is unpinned, and kubo's repo GC frees its blocks")
	s.StringsVar(&c.Announce, "announce-addr", AnnounceUsage)
}

// Validate checks the settings that need no network.
func (c *Config) Validate() error {
	if err := ValidateName("--name", c.Name); err != nil {
		return err
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("--ack-wait %v: must be at least 1s", c.AckWait)
	}
	if err := ValidateAnnounce(c.Announce); err != nil {
		return err
	}
	if c.Listen != "" && c.Pin.CacheDir == "" {
		return fmt.Errorf("--listen %s: serves the mirror's cache, so it needs --cache-dir", c.Listen)
	}
	return c.Pin.Validate()
}

// Worker is a mirror: it handles the events of its consumer, each pinned
// (or let go) through its Pinner. Build it with NewWorker, or Open.
type Worker struct {
	pinner *Pinner
	// cache is the mirror's own cache, nil without --cache-dir; kubo its
	// node, which serves the cache's NARs.
	cache       *mirrorcache.Cache
	kubo        *ipfs.Kubo
	js          jetstream.JetStream
	consumer    events.ConsumerOptions
	keepRetired bool
	// order is made with the Worker, never later: its handlers run
	// concurrently.
	order   *cidOrder
	roots   rootState
	closers []func()
}

// WorkerOptions are what a Worker works with besides its Pinner.
type WorkerOptions struct {
	// JS and Consumer name the stream and the durable consumer Run
	// follows. A Worker without them (the one that pins a replay's last
	// cache root) consumes nothing, and its order keeps every CID it
	// handled: it has no ack floor to ask.
	JS       jetstream.JetStream
	Consumer events.ConsumerOptions
	// Cache is the mirror's own cache, nil without --cache-dir; Kubo its
	// node, which serves the cache's NARs.
	Cache *mirrorcache.Cache
	Kubo  *ipfs.Kubo
	// KeepRetired leaves retired CIDs pinned.
	KeepRetired bool
}

// NewWorker returns a Worker that pins with p.
func NewWorker(p *Pinner, o WorkerOptions) *Worker {
	w := &Worker{pinner: p, cache: o.Cache, kubo: o.Kubo, js: o.JS, consumer: o.Consumer, keepRetired: o.KeepRetired}
	var floor func(context.Context) (uint64, error)
	if o.JS != nil && o.Consumer.Durable != "" {
		floor = w.ackFloor
	}
	w.order = newCIDOrder(floor, p.log.Named("order"))
	return w
}

// ackFloor asks the server for the consumer's ack floor: the stream
// sequence at and below which every event it delivers is settled.
func (w *Worker) ackFloor(ctx context.Context) (uint64, error) {
	stream := w.consumer.Stream
	if stream == "" {
		stream = events.DefaultStream
	}
	c, err := w.js.Consumer(ctx, stream, w.consumer.Durable)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", w.consumer.Durable, err)
	}
	return c.CachedInfo().AckFloor.Stream, nil
}

// JS is the JetStream the Worker consumes from.
func (w *Worker) JS() jetstream.JetStream { return w.js }

// Cache is the mirror's own cache, nil without --cache-dir.
func (w *Worker) Cache() *mirrorcache.Cache { return w.cache }

// Kubo is the mirror's node, which serves the cache's NARs; nil for a
// Worker not made by Open.
func (w *Worker) Kubo() *ipfs.Kubo { return w.kubo }

// Open connects everything a mirror needs.
func Open(ctx context.Context, cfg Config, log *zap.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	kubo, err := ipfs.Dial(cfg.Pin.KuboAPI)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := kubo.Ping(pctx); err != nil {
		// Not fatal: pins are retried until the node answers.
		log.Warn("the mirror's kubo does not answer yet; pins wait for it", zap.String("kubo", kubo.String()), zap.Error(err))
	}
	cancel()
	cache, err := cfg.Pin.OpenCache()
	if err != nil {
		return nil, err
	}
	nc, js, err := cfg.NATS.JetStream(ctx, "nix-ipfs mirror "+cfg.Name, log)
	if err != nil {
		return nil, err
	}
	m := defaultMetrics
	p := NewPinner(kubo, PinnerOptions{
		Mirror:     cfg.Name,
		Announce:   cfg.Announce,
		JS:         js,
		Verify:     cfg.Pin.Verify,
		PinTimeout: cfg.Pin.PinTimeout,
		PinStall:   cfg.Pin.PinStall,
		PinHedge:   cfg.Pin.PinHedge,
		Logger:     log.With(zap.String("mirror", cfg.Name)),
		OnPin:      RecordPin,
		Cache:      cache,
	})
	w := NewWorker(p, WorkerOptions{
		JS: js,
		Consumer: events.ConsumerOptions{
			Stream:         cfg.NATS.Stream,
			Durable:        Durable(cfg.Name),
			FilterSubjects: filterSubjects,
			Concurrency:    cfg.Pin.Concurrency,
			AckWait:        cfg.AckWait,
			MaxAttempts:    cfg.Pin.MaxAttempts,
			Backoff:        cfg.Pin.Backoff,
			Logger:         log,
			OnResult:       m.onEvent,
			OnLag:          sharedmetrics.LagOf(Durable(cfg.Name)),
		},
		Cache:       cache,
		Kubo:        kubo,
		KeepRetired: cfg.KeepRetired,
	})
	w.closers = append(w.closers, func() { nc.Drain() })
	return w, nil
}

// filterSubjects are the events a mirror consumes: what to pin, what to
// let go, and the cache's root as a UnixFS directory.
var filterSubjects = []string{events.SubjectPublished, events.SubjectRetired, events.SubjectCacheRoot, events.SubjectLatest}

// Run pins every published CID, and unpins every retired one, until ctx is
// done. A mirror with a cache of its own keeps the cache's mirror list
// meanwhile, as the publisher does, so clients that fail over to this
// cache still find the mirrors.
func (w *Worker) Run(ctx context.Context) error {
	if w.cache != nil {
		mctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			mirrorlist.Follow(mctx, w.js, w.consumer.Stream, w.cache.Dir(), w.pinner.log.Named("mirrors"))
		}()
		defer func() { stop(); <-done }()
	}
	return events.Consume(ctx, w.js, w.consumer, w.handle)
}

// handle pins the CID of a "published" event, or lets go of a "retired"
// one's (retire).
func (w *Worker) handle(ctx context.Context, d events.Delivery) error {
	var seq uint64
	if d.Meta != nil {
		seq = d.Meta.Sequence.Stream
	}
	switch ev := d.Event.(type) {
	case *events.Published:
		it, err := FromPublished(ev)
		if err != nil {
			return err
		}
		received := time.Now()
		var r Result
		ran, err := w.order.do(ctx, it.CID.String(), seq, func() error {
			var perr error
			r, perr = w.pinner.Pin(ctx, it)
			return perr
		})
		w.logStages(d, ev, received, r, err)
		if err == nil && !ran {
			w.pinner.log.Info("published event older than a later retirement of the same CID; not pinned",
				zap.String("cid", it.CID.String()), zap.String("store_path", it.StorePath))
		}
		return err
	case *events.CacheRoot:
		return w.pinRoot(ctx, ev, seq)
	case *events.Retired:
		return w.retire(ctx, ev, seq)
	case *events.Latest:
		return KeepLatest(w.cache, ev)
	}
	return errs.Errorf(errs.Invalid, "mirror got a %s event on %s", events.Head(d.Event).Type, d.Msg.Subject())
}

// logStages logs, at debug level, where a published path's time went on
// its way to its pinned event: from the event's time to JetStream storing
// it, from there to this mirror receiving it, waiting for an earlier event
// of the same CID, checking and pinning it, and announcing the pin.
func (w *Worker) logStages(d events.Delivery, ev *events.Published, received time.Time, r Result, err error) {
	log := w.pinner.log
	if ce := log.Check(zap.DebugLevel, "published event handled"); ce != nil {
		fields := []zap.Field{zap.String("store_path", ev.StorePath), zap.String("event_id", ev.ID),
			zap.Time("published", ev.Time), zap.Time("received", received),
			zap.Duration("since_published", received.Sub(ev.Time))}
		if d.Meta != nil {
			fields = append(fields, zap.Duration("to_stream", d.Meta.Timestamp.Sub(ev.Time)),
				zap.Duration("stream_to_received", received.Sub(d.Meta.Timestamp)),
				zap.Uint64("deliveries", d.Meta.NumDelivered))
		}
		if !r.Start.IsZero() {
			end := r.Start.Add(r.Took)
			fields = append(fields, zap.Duration("before_pin", r.Start.Sub(received)),
				zap.Duration("pin", r.Took), zap.Bool("fresh", r.Fresh),
				zap.Duration("after_pin", time.Since(end)), zap.Duration("published_to_pinned", end.Sub(ev.Time)))
		}
		if err != nil {
			fields = append(fields, zap.Error(err))
		}
		ce.Write(fields...)
	}
}

// Close releases the connections.
func (w *Worker) Close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
}
