package publisher

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	sharedmetrics "github.com/nix-ipfs/nix-ipfs/internal/metrics"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/lease"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
)

// DefaultDurable is the publisher's durable consumer. Publishers that share
// it share the work.
const DefaultDurable = "publisher"

// DefaultChunker is the reference-aware chunker (package nardag,
// nardag.DefaultRefs): cut around the store path hashes a NAR names,
// 248 KiB fixed chunks between them. An upgrade that rebuilt a closure
// with new references moves 1.2% of its new NAR bytes with it, against a
// third with buzhash (docs/CHUNKING.md). kubo does not have it: the
// publisher builds the DAG and imports the blocks.
const DefaultChunker = "nix-refs-4096-253952"

// KuboChunker is the default before DefaultChunker, and with
// --ipfs-nocopy before NocopyChunker: content-defined, so a NAR whose one
// file changed length re-synchronises after it (two such versions stored
// in 0.50 of their NAR sizes against 0.72 with size-262144,
// docs/BENCHMARKS.md).
const KuboChunker = "buzhash"

// NocopyChunker is the chunker with --ipfs-nocopy when --chunker is not
// given: kubo's filestore references only what kubo's own add cut, so
// nix-refs cannot be, and of kubo's chunkers fixed 256 KiB chunks cost
// kubo the least: 1.34 against buzhash's 1.92 CPU-seconds per GiB, which
// on 2 cores took the 1 GiB path from 2.00x to 2.30x the original
// workflow (docs/BENCHMARKS.md, issue 25). An upgrade then moves 37.2% of
// the new NAR bytes instead of 32.6% (docs/CHUNKING.md); nocopy is for a
// host whose disk and speed matter more than its clients' upgrades.
const NocopyChunker = "size-262144"

// DefaultAckWait bounds how long the events a dead publisher was handling
// wait before another publisher (or its own restart) gets them again. A
// live publisher reports progress every third of it, so it costs one
// small message per in-flight event every few seconds.
const DefaultAckWait = 10 * time.Second

// Config is the publisher worker's settings.
type Config struct {
	NATS          config.NATS
	Store         config.Store
	Log           config.Log
	CacheDir      string
	CacheURL      string
	SecretKeyFile string
	KuboAPI       string
	NixDB         string
	Concurrency   int
	Events        int
	Chunker       string
	Nocopy        bool
	Durable       string
	AckWait       time.Duration
	MaxAttempts   int
	LockTTL       time.Duration
	MFSDir        string
	MFSAnnounce   time.Duration
}

// Register adds the publisher's flags.
func (c *Config) Register(s *config.Set) {
	c.NATS.Register(s)
	c.Store.Register(s)
	c.Log.Register(s, "json")
	s.StringVar(&c.CacheDir, "cache-dir", "", "the file:// binary cache directory to write (required)")
	s.StringVar(&c.CacheURL, "cache-url", "", "the cache's URL as clients reach it, announced in events (default file://<cache-dir>)")
	s.StringVar(&c.SecretKeyFile, "secret-key-file", "", "Nix binary cache secret key to sign narinfos (required; mode 600)")
	s.StringVar(&c.KuboAPI, "kubo-api", "", "kubo RPC API: http URL or multiaddr (default: $IPFS_PATH/api, else ~/.ipfs/api)")
	s.StringVar(&c.NixDB, "nix-db", nixstore.DefaultDBPath, "the Nix database to read path metadata from (read-only)")
	s.IntVar(&c.Concurrency, "concurrency", 4, "store paths published at once")
	s.IntVar(&c.Events, "events", 4, "built events handled at once")
	s.StringVar(&c.Chunker, "chunker", "", "how NARs are cut into blocks: nix-refs-<gap>-<size> (cut around store path hashes, built by the publisher; not with --ipfs-nocopy), or a kubo chunker: buzhash, size-<bytes> or rabin-<min>-<avg>-<max>; recorded with each CID, so old CIDs stay valid (default "+DefaultChunker+", or "+NocopyChunker+" with --ipfs-nocopy; docs/CHUNKING.md)")
	s.BoolVar(&c.Nocopy, "ipfs-nocopy", false, "add NARs by reference (kubo filestore), streamed to kubo while they are written: the cache's NAR is the only copy on this host; kubo's add cuts them, so the chunker is "+NocopyChunker+" unless --chunker names another kubo chunker (nix-refs-* is refused); see docs/OPERATIONS.md")
	s.StringVar(&c.Durable, "durable", DefaultDurable, "durable consumer name; publishers sharing it share the work")
	s.DurationVar(&c.AckWait, "ack-wait", DefaultAckWait, "redeliver an event whose publisher went silent this long (a running publisher reports progress every third of it)")
	s.IntVar(&c.MaxAttempts, "max-attempts", 10, "deliveries before an event failing with a non-transient error is dead-lettered")
	s.StringVar(&c.MFSDir, "mfs-dir", "", "also keep the cache as a UnixFS directory at this path in kubo's MFS (e.g. /nix-cache): narinfos and nar/ links to the NAR CIDs, so any IPFS gateway serves it to stock Nix as http://GATEWAY/ipfs/<root>; each new root is announced in a cacheroot event, which mirrors pin (empty: off)")
	s.DurationVar(&c.MFSAnnounce, "mfs-announce-every", DefaultMFSAnnounceEvery, "announce a changed --mfs-dir root at most this often")
	s.DurationVar(&c.LockTTL, "lock-ttl", DefaultLockTTL, "lease on a path being published, refreshed every third of it; a publisher on the same machine takes over a dead holder's lease at once, one on another host after this long")
}

// Params returns the kubo import parameters.
func (c *Config) Params() (ipfs.Params, error) {
	p := ipfs.DefaultParams()
	p.Chunker = c.ChunkerName()
	p.Nocopy = c.Nocopy
	return p, p.Validate()
}

// ChunkerName is the chunker the publisher uses: --chunker, or by default
// DefaultChunker, which kubo's filestore cannot take: with --ipfs-nocopy,
// NocopyChunker. An explicit nix-refs chunker with --ipfs-nocopy is refused
// (Params).
func (c *Config) ChunkerName() string {
	switch {
	case c.Chunker != "":
		return c.Chunker
	case c.Nocopy:
		return NocopyChunker
	default:
		return DefaultChunker
	}
}

// Validate checks the settings that need no network.
func (c *Config) Validate() error {
	if c.CacheDir == "" {
		return fmt.Errorf("--cache-dir is required")
	}
	if c.SecretKeyFile == "" {
		return fmt.Errorf("--secret-key-file is required")
	}
	if _, err := c.Params(); err != nil {
		return err
	}
	return c.Store.Validate()
}

// Worker is a running publisher: its dependencies, built from a Config.
type Worker struct {
	Publisher *Publisher
	JS        jetstream.JetStream
	Consumer  events.ConsumerOptions
	// Cache is the cache directory, whose mirror list Run keeps.
	Cache Cache
	// MFS is the cache as a UnixFS directory, nil without --mfs-dir.
	MFS         *MFSCache
	mfsAnnounce time.Duration
	closers     []func()
	log         *zap.Logger
}

// Open connects everything a publisher needs.
func Open(ctx context.Context, cfg Config, log *zap.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	key, err := LoadSecretKey(cfg.SecretKeyFile)
	if err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	params, _ := cfg.Params()
	w := &Worker{Cache: Cache{Dir: cfg.CacheDir, StoreDir: cfg.Store.Dir}, log: log}
	store, err := nixstore.WaitDB(ctx, cfg.NixDB, cfg.Store.Dir, func(err error) {
		log.Warn("waiting for the Nix database", zap.Error(err))
	})
	if err != nil {
		return nil, err
	}
	w.closers = append(w.closers, func() { store.Close() })
	kubo, err := ipfs.Dial(cfg.KuboAPI)
	if err != nil {
		w.Close()
		return nil, err
	}
	nc, js, err := cfg.NATS.JetStream(ctx, "nix-ipfs publisher", log)
	if err != nil {
		w.Close()
		return nil, err
	}
	w.closers = append(w.closers, func() { nc.Drain() })
	w.JS = js
	host, _ := os.Hostname()
	// The leases live as long as the events do: as many replicas as the
	// stream has (which an explicit --stream-replicas has just set), so a
	// publisher started with the defaults never scales the bucket down.
	replicas, err := events.StreamReplicas(ctx, js, cfg.NATS.Stream)
	if err != nil {
		w.Close()
		return nil, err
	}
	locker, err := lease.NewKV(ctx, js, lease.Self(), cfg.LockTTL, replicas, log)
	if err != nil {
		w.Close()
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = locker.ReapDead(rctx)
	cancel()
	if err != nil {
		log.Warn("cannot release dead publishers' leases; they expire by themselves", zap.Error(err))
	}
	if cfg.MFSDir != "" {
		w.MFS, err = NewMFSCache(kubo, cfg.MFSDir, cfg.Store.Dir, host, log.Named("mfs"))
		if err != nil {
			w.Close()
			return nil, err
		}
		w.mfsAnnounce = cfg.MFSAnnounce
	}
	m := defaultMetrics
	p, err := New(Options{
		Cache:       w.Cache,
		CacheURL:    cfg.CacheURL,
		Key:         key,
		Params:      params,
		Concurrency: cfg.Concurrency,
		Host:        host,
		Logger:      log,
		Locker:      locker,
		OnPath:      m.onPath,
	}, store, kubo, js)
	if err != nil {
		w.Close()
		return nil, err
	}
	w.Publisher = p
	w.Consumer = events.ConsumerOptions{
		Stream:        cfg.NATS.Stream,
		Durable:       cfg.Durable,
		FilterSubject: events.SubjectBuilt,
		Concurrency:   cfg.Events,
		AckWait:       cfg.AckWait,
		MaxAttempts:   cfg.MaxAttempts,
		Logger:        log,
		OnResult:      m.onEvent,
		OnLag:         sharedmetrics.LagOf(cfg.Durable),
	}
	return w, nil
}

// Run consumes built events until ctx is done, and keeps the cache's
// mirror list from the mirrors' pinned events meanwhile.
func (w *Worker) Run(ctx context.Context) error {
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowMirrors(mctx, w.JS, w.Consumer.Stream, w.Cache, w.log.Named("mirrors"))
	}()
	defer func() { stop(); <-done }()
	// A crashed publisher's temp files (a NAR half-written when it was
	// killed) go once they are stale; at start they may be a live one's.
	go func() {
		t := time.NewTicker(atomicfile.StaleAfter)
		defer t.Stop()
		for {
			select {
			case <-mctx.Done():
				return
			case <-t.C:
				w.Cache.CleanStale()
			}
		}
	}()
	if w.MFS != nil {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			w.MFS.Announce(mctx, w.JS, w.mfsAnnounce)
		}()
		go func() {
			defer wg.Done()
			if n, err := w.MFS.Sync(mctx, w.Cache); err != nil && mctx.Err() == nil {
				w.log.Warn("cannot add the existing cache to the MFS directory", zap.Error(err))
			} else if n > 0 {
				w.log.Info("existing cache added to the MFS directory", zap.Int("paths", n))
			}
			if err := w.MFS.Follow(mctx, w.JS, w.Consumer.Stream); err != nil && mctx.Err() == nil {
				w.log.Error("the MFS copy of the cache stopped following the stream", zap.Error(err))
			}
		}()
		defer func() { stop(); wg.Wait() }()
	}
	return events.Consume(ctx, w.JS, w.Consumer, func(ctx context.Context, d events.Delivery) error {
		ev, ok := d.Event.(*events.Built)
		if !ok {
			return errs.Errorf(errs.Invalid, "publisher got a %s event on %s", events.Head(d.Event).Type, d.Msg.Subject())
		}
		if err := w.Publisher.HandleBuilt(ctx, ev); err != nil {
			return err
		}
		var seq uint64
		if d.Meta != nil {
			seq = d.Meta.Sequence.Stream
		}
		return w.Publisher.RecordLatest(ctx, ev, seq)
	})
}

// Close releases the connections.
func (w *Worker) Close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
}
