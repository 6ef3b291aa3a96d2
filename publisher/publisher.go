// Package publisher is the heart of host A: it turns "built" events into a
// binary cache that stock Nix can use, with every NAR also in IPFS.
//
// For each event it takes the closure of the outputs and, for every path the
// cache lacks, streams the path's NAR once through a SHA-256, into
// nar/<nix32>.nar (atomically) and into kubo (pinned), checks the hash
// against the store's record, then writes <hashpart>.narinfo atomically:
// the fields `nix copy --to file://...?compression=none` writes, the
// cache's signature, and an IPFSHash line. Then it announces the path with a
// "published" event, and acks the "built" event only when all of that is
// durable. Publishing a path twice is harmless: the bytes, the file names and
// the CID are all content addresses.
//
// A closure's small paths (a NAR of at most 256 KiB) are published in
// batches of up to 512 (batch.go): the same files, CIDs and events, with
// one dag import, shared directory fsyncs and pipelined acks for the
// batch instead of a round of each per path.
package publisher

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"time"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/nar"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// IPFS is what the publisher needs from an IPFS node.
type IPFS interface {
	Add(ctx context.Context, r io.Reader, p ipfs.Params, pin bool) (cid.Cid, error)
	// AddAt adds r by reference to the file path (with p.Nocopy), which
	// gets r's bytes only once the add is done: see ipfs.Kubo.AddAt.
	AddAt(ctx context.Context, r io.Reader, path string, p ipfs.Params, pin bool) (cid.Cid, error)
	// Unpin drops the pin of a nocopy add whose file never came to be.
	Unpin(ctx context.Context, c cid.Cid) error
	// DagImport stores and pins DAGs kubo's add cannot make (nardag's
	// reference-aware chunker), streamed by nardag.Import.
	DagImport(ctx context.Context, cars []io.Reader, pin bool) (map[cid.Cid]string, error)
	Self(ctx context.Context) (ipfs.Node, error)
}

var (
	_ IPFS            = (*ipfs.Kubo)(nil)
	_ nardag.Importer = IPFS(nil)
)

// Options configure a Publisher.
type Options struct {
	Cache Cache
	// CacheURL is the cache's base URL as announced in events.
	CacheURL string
	Key      signature.SecretKey
	Params   ipfs.Params
	// Concurrency bounds how many paths are published at once.
	Concurrency int
	Host        string
	Logger      *zap.Logger
	// Locker, if set, keeps two publishers from publishing one path at the
	// same time. Within one process, concurrent requests share one publish.
	Locker Locker
	// OnPath, if set, is called after each path with its outcome.
	OnPath func(p *events.Published, fresh bool, took time.Duration, err error)
}

// Publisher publishes store paths.
type Publisher struct {
	opt   Options
	store nixstore.Store
	ipfs  IPFS
	js    jetstream.JetStream
	log   *zap.Logger
	// slots bounds the paths published at once (Options.Concurrency).
	slots *semaphore.Weighted
	// flights shares one publish of a path among concurrent callers.
	flights flights

	// batchSlots bounds the batches published at once (Concurrency),
	// apart from slots: a first system build's batches, seconds each,
	// never hold back another event's paths published alone.
	batchSlots *semaphore.Weighted
	// batchPaths is the most small paths of a closure published in one
	// batch (batch.go).
	batchPaths int

	// dirs shares directory fsyncs between paths published at once
	// (group commit): for small paths they were a quarter of the work.
	dirs atomicfile.DirSyncer

	selfMu   sync.Mutex
	self     ipfs.Node
	selfTime time.Time
}

// New returns a Publisher. js is where "published" events go; nil publishes
// nothing (for tools and tests that only fill a cache).
func New(opt Options, store nixstore.Store, node IPFS, js jetstream.JetStream) (*Publisher, error) {
	if opt.Concurrency <= 0 {
		opt.Concurrency = 4
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Params.Nocopy && opt.Params.CIDVersion == 0 {
		return nil, errors.New("nocopy needs CID version 1")
	}
	if opt.Cache.StoreDir == "" {
		opt.Cache.StoreDir = store.StoreDir()
	}
	if opt.CacheURL == "" {
		opt.CacheURL = "file://" + opt.Cache.Dir
	}
	if err := opt.Cache.Open(); err != nil {
		return nil, err
	}
	return &Publisher{
		opt: opt, store: store, ipfs: node, js: js, log: opt.Logger,
		slots:      semaphore.NewWeighted(int64(opt.Concurrency)),
		batchSlots: semaphore.NewWeighted(int64(opt.Concurrency)),
		batchPaths: batchPaths(opt.Concurrency),
	}, nil
}

// HandleBuilt publishes the closure of a built event's outputs. It returns
// nil only when every path in it is in the cache, in IPFS and announced.
func (p *Publisher) HandleBuilt(ctx context.Context, ev *events.Built) error {
	if ev.StoreDir != p.store.StoreDir() {
		return errs.Errorf(errs.Invalid, "event is for store %s; this publisher serves %s", ev.StoreDir, p.store.StoreDir())
	}
	closure, err := p.store.Closure(ctx, ev.OutPaths)
	if err != nil {
		return notYetValid(fmt.Errorf("closure of %v: %w", ev.OutPaths, err))
	}
	log := p.log.With(zap.String("event_id", ev.ID), zap.String("drv", ev.DrvPath))
	if ev.Job != "" {
		log = log.With(zap.String("job", ev.Job), zap.Int64("hydra_build", ev.HydraBuild))
	}
	log.Info("publishing closure", zap.Int("paths", len(closure)), zap.Strings("outputs", ev.OutPaths))

	// Every path is tried, whatever happens to the others: a failure does
	// not cancel the rest, and the event's outcome comes from all of them.
	failed := make([]error, len(closure))
	var g errgroup.Group
	g.SetLimit(p.closureWorkers())
	// Small paths go in batches (batch.go), the others one by one.
	batches, single := p.plan(ctx, closure)
	for _, b := range batches {
		g.Go(func() error {
			for j, err := range p.publishBatch(ctx, b.infos) {
				if err != nil {
					failed[b.idx[j]] = fmt.Errorf("%s: %w", b.infos[j].Path, err)
				}
			}
			return nil
		})
	}
	for _, i := range single {
		sp := closure[i]
		g.Go(func() error {
			if _, err := p.PublishPath(ctx, sp); err != nil {
				failed[i] = fmt.Errorf("%s: %w", sp, err)
			}
			return nil
		})
	}
	g.Wait()
	var all []error
	for _, err := range failed {
		if err != nil {
			all = append(all, err)
		}
	}
	if len(all) == 0 {
		return nil
	}
	// The worst kind decides what happens to the event.
	joined := errors.Join(all...)
	return errs.E(errs.Worst(all...), joined)
}

// closureWorkers bounds the paths of one closure handled at once. Of
// these, Concurrency publish (the slots); the others check paths that are
// done already, or wait, without a slot, for another publisher's lease or
// for this process's publish of a shared path for another event. Another
// publisher holds at most its Concurrency leases at a time, and this
// process publishes at most Concurrency paths, so four times Concurrency
// keeps the slots busy while two other publishers and other events work on
// this closure, as a goroutine per path did.
func (p *Publisher) closureWorkers() int { return 4 * p.opt.Concurrency }

// PublishPath makes sure one store path is in the cache and in IPFS and has
// been announced, publishing it if not. Concurrent calls for the same path
// in this process share one publish.
func (p *Publisher) PublishPath(ctx context.Context, sp string) (*events.Published, error) {
	return p.flights.do(ctx, sp, func() (*events.Published, error) { return p.publishPath(ctx, sp) })
}

// publishPath publishes sp unless it is done already. Contention for a
// path's lease is waited out here, on a short schedule of its own: the
// holder usually finishes within seconds, and then the path is found done.
// The event's failure backoff is for failures.
func (p *Publisher) publishPath(ctx context.Context, sp string) (*events.Published, error) {
	start := time.Now()
	if err := storepath.Validate(p.store.StoreDir(), sp); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	hashPart := storepath.HashPart(sp)
	log := p.log.With(zap.String("store_path", sp))
	for wait := 0; ; wait++ {
		ev, done, err := p.doneAlready(ctx, sp, hashPart, start)
		if done || err != nil {
			return ev, err
		}
		ev, err = p.publishLeased(ctx, log, sp, hashPart, start)
		if !IsHeld(err) {
			return ev, err
		}
		if wait == 0 {
			log.Info("waiting for another publisher's lease", zap.Error(err))
		}
		if err := sleep(ctx, lockRetryDelay(wait)); err != nil {
			return nil, err
		}
	}
}

// publishLeased publishes sp holding one of the slots and, with a Locker,
// the path's lease. It fails with an error IsHeld recognises, having let go
// of its slot, when another publisher holds the lease: other paths may go
// ahead while this one waits.
func (p *Publisher) publishLeased(ctx context.Context, log *zap.Logger, sp, hashPart string, start time.Time) (*events.Published, error) {
	if err := p.slots.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	defer p.slots.Release(1)
	if p.opt.Locker != nil {
		lctx, unlock, err := p.opt.Locker.Lock(ctx, hashPart, sp)
		if err != nil {
			return nil, err
		}
		defer unlock()
		// The holder may have finished it just before the lease came free.
		if ev, done, err := p.doneAlready(lctx, sp, hashPart, start); done || err != nil {
			return ev, err
		}
		ctx = lctx
	}
	return p.publish(ctx, log, sp, hashPart, start)
}

// publish writes sp's NAR and narinfo and announces it.
func (p *Publisher) publish(ctx context.Context, log *zap.Logger, sp, hashPart string, start time.Time) (*events.Published, error) {
	info, err := p.store.QueryPathInfo(ctx, sp)
	if err != nil {
		return nil, notYetValid(err)
	}
	ni, err := p.writeNAR(ctx, log, info)
	if err != nil {
		p.report(nil, true, start, err)
		return nil, err
	}
	if err := ni.Sign(p.opt.Key); err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("sign %s: %w", sp, err))
	}
	// The CID's binding to the NAR, which writeNAR has just proved (the
	// bytes added to kubo are the bytes hashed): a substituter trusting
	// this key streams the CID on its first fetch.
	if err := ni.SignCID(p.opt.Key); err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("sign CID of %s: %w", sp, err))
	}
	if err := p.opt.Cache.WriteNarInfo(hashPart, []byte(ni.String()), &p.dirs); err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("write narinfo of %s: %w", sp, err))
	}
	ev, err := p.eventFor(ctx, ni)
	if err != nil {
		return nil, err
	}
	announced := time.Now()
	err = p.announce(ctx, ev, hashPart)
	p.report(ev, true, start, err)
	if err == nil {
		// The event's time is when it was sealed, just before announce:
		// "announce" is the part of "took" that follows it (the stream's
		// ack and the announced record).
		log.Info("published", zap.String("cid", ni.IPFSHash), zap.Uint64("nar_size", ni.NarSize),
			zap.Duration("took", time.Since(start)), zap.Duration("announce", time.Since(announced)))
	}
	return ev, err
}

// doneAlready reports whether sp is published already: a narinfo with an
// IPFSHash whose NAR is in place, and whose announcement was acked. A path
// written but not announced (a crash between the two) is announced now.
func (p *Publisher) doneAlready(ctx context.Context, sp, hashPart string, start time.Time) (*events.Published, bool, error) {
	ni, err := p.opt.Cache.ReadNarInfo(hashPart)
	if err != nil {
		return nil, false, err
	}
	// Touched before it is relied on, so that prune's --grace spares a path
	// a closure being published right now reuses (the grace handshake,
	// cachedir.Cache.Claim).
	if ni == nil || ni.IPFSHash == "" || ni.StorePath != sp || !p.narPresent(ni) || !p.opt.Cache.Claim(hashPart) {
		return nil, false, nil
	}
	ev, err := p.eventFor(ctx, ni)
	if err != nil {
		return nil, false, err
	}
	if p.opt.Cache.Announced(hashPart, ni.IPFSHash) {
		return ev, true, nil
	}
	err = p.announce(ctx, ev, hashPart)
	p.report(ev, false, start, err)
	return ev, true, err
}

// lockRetryDelay is the wait before the n-th retry (from 0) of a lease
// another publisher holds: quick at first, then every two seconds.
func lockRetryDelay(n int) time.Duration {
	steps := []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second}
	if n < len(steps) {
		return steps[n]
	}
	return 2 * time.Second
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Publisher) report(ev *events.Published, fresh bool, start time.Time, err error) {
	if p.opt.OnPath != nil {
		p.opt.OnPath(ev, fresh, time.Since(start), err)
	}
}

func (p *Publisher) narPresent(ni *narinfo.NarInfo) bool {
	fi, err := os.Stat(p.opt.Cache.NarPath(ni.URL))
	return err == nil && fi.Mode().IsRegular() && uint64(fi.Size()) == ni.FileSize
}

// writeNAR streams the path's NAR once: into a SHA-256, into a temp file
// that becomes nar/<hash>.nar, and into kubo, through add or, with a
// reference-aware chunker, into nardag, which builds the DAG on a second
// goroutine (a second core) while the NAR is written and streams its
// blocks to kubo (nardag.Import). With nocopy, kubo's add reads the same
// stream and records its leaves as offsets in the file the temp file
// becomes (ipfs.Kubo.AddAt): before, the NAR was written, then read back
// by kubo, one pass after the other (NARs of one chunk still are, see
// late). It returns the narinfo with everything but the cache's signature.
func (p *Publisher) writeNAR(ctx context.Context, log *zap.Logger, info *nixstore.PathInfo) (*narinfo.NarInfo, error) {
	// The NAR's name is its hash, known from the store's record before it
	// is written; the check below refuses a NAR that does not match it.
	url := cachedir.NarURL(info.NarHash)
	final := p.opt.Cache.NarPath(url)
	if final == "" {
		return nil, errs.Errorf(errs.Corrupt, "store path %s: NAR hash %q makes no NAR file name", info.Path, info.NarHash)
	}
	tmp, err := p.opt.Cache.CreateNAR()
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("nar temp file: %w", err))
	}
	defer tmp.Abort()
	// The disk writes the NAR while it is made, so the fsync before its
	// rename waits for the last few MiB only, not for most of it: without,
	// a 1 GiB NAR's fsync took 0.56-0.83 s with both cores idle. In copy
	// mode too (kubo writing its own block files meanwhile): measured on a
	// loaded machine it seemed to cost kubo CPU, but on a quieter one
	// (issue 25, 7 rounds interleaved) the 1 GiB path published faster in
	// 6 of 7 rounds, kubo spending 2.30-2.35 against 2.48-2.71 CPU-s/GiB.
	tmp.WriteBehind(narWriteBehind)

	h := sha256.New()
	counter := &countWriter{}
	var (
		c       cid.Cid
		addErr  error
		addDone chan struct{}
		pw      pipeWriter
	)
	writers := []io.Writer{h, tmp, counter}
	// With nocopy, kubo reads a file's root block back during the add
	// (to put it in its MFS root). For a NAR of one chunk that root is
	// the leaf, read from the file, which does not exist yet: such NARs
	// (at most one chunk of any kubo chunker) are added from their file
	// once it is in place.
	late := p.opt.Params.Nocopy && info.NarSize <= uint64(chunker.ChunkSizeLimit)
	if !late {
		pr, w := p.pipe()
		pw = w
		writers = append(writers, pw)
		addDone = make(chan struct{})
		go func() {
			defer close(addDone)
			c, addErr = p.add(ctx, pr, info, final)
			// If kubo stopped reading early, unblock the NAR writer.
			pr.CloseWithError(errOr(addErr, io.ErrClosedPipe))
		}()
	}
	// The NAR writer emits every framing token (a length, a name, padding)
	// as a Write of its own. Unbuffered, each became a write(2) on the temp
	// file and a chunk of its own, flushed, on kubo's HTTP stream: for
	// paths of many small files that cost the publisher three times the
	// CPU per byte (docs/BENCHMARKS.md). 32 KiB is what io.Copy hands over
	// for file contents anyway, so large files are written as before.
	bw := bufio.NewWriterSize(io.MultiWriter(writers...), 32<<10)
	dumpErr := nar.DumpPath(bw, info.Path)
	if dumpErr == nil {
		dumpErr = bw.Flush()
	}
	if pw != nil {
		pw.CloseWithError(dumpErr)
		if dumpErr == nil {
			// Flush the NAR's last pages (written behind) while kubo
			// takes its last blocks; Commit's fsync then finds nothing
			// left. Its error counts here: after a failed fsync Linux
			// may report the next one clean, the pages being dropped.
			if err := tmp.Sync(); err != nil {
				dumpErr = fmt.Errorf("fsync: %w", err)
			}
		}
		<-addDone
	}
	if dumpErr != nil {
		// The side that failed first decides. When kubo failed, the NAR
		// writer only saw kubo's error echoed through the pipe; when our own
		// write failed (a full disk), kubo only saw ours as "reading input",
		// and the error must stay a transient disk error, not kubo's.
		p.dropNocopy(ctx, log, c)
		if addErr != nil && errors.Is(dumpErr, addErr) {
			return nil, fmt.Errorf("add NAR of %s to IPFS: %w", info.Path, addErr)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classifyIOErr(fmt.Errorf("dump NAR of %s: %w", info.Path, dumpErr))
	}
	// A corrupt path first: kubo's add of it may have failed too (a
	// nocopy add streamed by a store record much larger than the NAR),
	// and retrying would not help.
	narHash := "sha256:" + nixbase32.EncodeToString(h.Sum(nil))
	size := counter.n
	if narHash != info.NarHash || size != info.NarSize {
		p.dropNocopy(ctx, log, c)
		return nil, errs.Errorf(errs.Corrupt,
			"store path %s is corrupt: its NAR hashes to %s (%d bytes) but the store recorded %s (%d bytes); run nix-store --verify --check-contents",
			info.Path, narHash, size, info.NarHash, info.NarSize)
	}
	if addErr != nil {
		return nil, fmt.Errorf("add NAR of %s to IPFS: %w", info.Path, addErr)
	}
	// Rename into place; an existing file of this name has these very
	// bytes. With nocopy, this is when the CID's leaves become readable.
	if err := tmp.CommitGrouped(final, &p.dirs); err != nil {
		return nil, classifyIOErr(fmt.Errorf("write NAR of %s: %w", info.Path, err))
	}
	if late {
		if c, err = p.addFile(ctx, final); err != nil {
			return nil, fmt.Errorf("add NAR of %s to IPFS (nocopy): %w", info.Path, err)
		}
	}

	return newNarInfo(info, url, narHash, size, c), nil
}

// addFile adds the NAR file name by reference (nocopy), reading it back.
func (p *Publisher) addFile(ctx context.Context, name string) (cid.Cid, error) {
	f, err := os.Open(name)
	if err != nil {
		return cid.Undef, classifyIOErr(err)
	}
	defer f.Close()
	return p.ipfs.AddAt(ctx, f, name, p.opt.Params, true)
}

// dropNocopy unpins what a nocopy add pinned when its file will not be
// written: its leaves name a file that does not hold their bytes. Without
// nocopy the blocks are kubo's own copies and the pin is harmless (the
// same bytes published again reuse it). Best effort: the retry publishes
// the path again, and a pin left behind only keeps unreadable references
// (`ipfs filestore verify` lists them).
func (p *Publisher) dropNocopy(ctx context.Context, log *zap.Logger, c cid.Cid) {
	if !p.opt.Params.Nocopy || !c.Defined() {
		return
	}
	if err := p.ipfs.Unpin(context.WithoutCancel(ctx), c); err != nil {
		log.Warn("unpin of an abandoned nocopy add failed", zap.String("cid", c.String()), zap.Error(err))
	}
}

// pipeWriter and pipeReader are the two ends of the pipe from the NAR
// writer to kubo or to nardag.
type (
	pipeWriter interface {
		io.Writer
		CloseWithError(error) error
	}
	pipeReader interface {
		io.Reader
		CloseWithError(error) error
	}
)

// pipe returns the pipe the NAR goes through to kubo's add or to nardag:
// a buffered one, so that the NAR writer's hashing and writing do not
// take turns with the reader (nardag's leaf hashing on this process's
// second core, or the HTTP stream kubo reads on its own cores).
func (p *Publisher) pipe() (pipeReader, pipeWriter) {
	np := nardag.NewPipe(narChunks, narChunkSize)
	return nardagReader{np}, nardagWriter{np}
}

// narWriteBehind is how often the NAR's writeback starts (a few chunks'
// worth): a 1 GiB NAR's fsync took 0.56-0.83 s without, 0.07-0.10 s with.
const narWriteBehind = 8 << 20

// The NAR's buffer to nardag: 2 MiB, in the NAR writer's 32 KiB writes.
const (
	narChunks    = 64
	narChunkSize = 32 << 10
)

type nardagReader struct{ *nardag.Pipe }

func (r nardagReader) CloseWithError(err error) error { r.CloseRead(err); return nil }

type nardagWriter struct{ *nardag.Pipe }

func (w nardagWriter) CloseWithError(err error) error { w.CloseWrite(err); return nil }

// add stores the NAR read from r in kubo, pinned, with the publisher's
// parameters: kubo's add cuts it (by reference to final, the NAR's file
// once written, with nocopy), or nardag does and kubo imports the blocks,
// cut around the hash parts of the path and its references.
func (p *Publisher) add(ctx context.Context, r io.Reader, info *nixstore.PathInfo, final string) (cid.Cid, error) {
	if p.opt.Params.Nocopy {
		return p.ipfs.AddAt(ctx, r, final, p.opt.Params, true)
	}
	if p.opt.Params.Kubo() {
		return p.ipfs.Add(ctx, r, p.opt.Params, true)
	}
	hashes := make([]string, 0, len(info.References)+1)
	hashes = append(hashes, storepath.HashPart(info.Path))
	for _, ref := range info.References {
		hashes = append(hashes, storepath.HashPart(ref))
	}
	return nardag.Import(ctx, p.ipfs, func(put nardag.Sink) (cid.Cid, error) {
		return nardag.Build(ctx, r, p.opt.Params.Chunker, hashes, put)
	}, true)
}

func (p *Publisher) eventFor(ctx context.Context, ni *narinfo.NarInfo) (*events.Published, error) {
	self, err := p.selfNode(ctx)
	if err != nil {
		return nil, err
	}
	prm := p.opt.Params
	ev := &events.Published{
		Host:       p.opt.Host,
		StoreDir:   p.store.StoreDir(),
		StorePath:  ni.StorePath,
		NarHash:    ni.NarHash,
		NarSize:    int64(ni.NarSize),
		References: append([]string{}, ni.References...),
		CacheURL:   p.opt.CacheURL,
		NarURL:     ni.URL,
		CID:        ni.IPFSHash,
		Import: events.ImportParams{
			CIDVersion: prm.CIDVersion, Chunker: prm.Chunker, RawLeaves: prm.RawLeaves,
			HashFunction: prm.HashFunction, MaxFileLinks: maxLinks(prm), Nocopy: prm.Nocopy,
		},
		Publisher: events.Node{PeerID: self.PeerID, Addrs: append([]string{}, self.Addrs...)},
		// With these three, a mirror rebuilds this very narinfo, byte for
		// byte, and serves it when this host is gone (mirrorcache.NarInfo).
		Deriver: ni.Deriver,
		Sigs:    append([]string(nil), ni.Sigs...),
		CA:      ni.CA,
		// And with this one, the mirror's narinfo lets a client that
		// trusts the key stream the CID at once, as from the origin.
		IPFSSigs: append([]string(nil), ni.IPFSSigs...),
	}
	if ev.Host == "" {
		ev.Host = "unknown"
	}
	events.Seal(ev)
	return ev, nil
}

func maxLinks(p ipfs.Params) int {
	if p.MaxFileLinks == 0 {
		return ipfs.DefaultParams().MaxFileLinks
	}
	return p.MaxFileLinks
}

// selfNode returns the kubo node's id and addresses, cached for a minute.
func (p *Publisher) selfNode(ctx context.Context) (ipfs.Node, error) {
	p.selfMu.Lock()
	defer p.selfMu.Unlock()
	if p.self.PeerID != "" && time.Since(p.selfTime) < time.Minute {
		return p.self, nil
	}
	n, err := p.ipfs.Self(ctx)
	if err != nil {
		if p.self.PeerID != "" {
			return p.self, nil
		}
		return ipfs.Node{}, fmt.Errorf("kubo identity: %w", err)
	}
	p.self, p.selfTime = n, time.Now()
	return n, nil
}

// announce publishes the path's "published" event and records that it was
// acknowledged, so a restart does not announce it again.
func (p *Publisher) announce(ctx context.Context, ev *events.Published, hashPart string) error {
	if p.js == nil {
		return nil
	}
	if _, err := events.Publish(ctx, p.js, events.SubjectPublished, ev); err != nil {
		return err
	}
	if err := p.opt.Cache.MarkAnnounced(hashPart, ev.CID); err != nil {
		// Harmless: the next publish of this path announces it again.
		p.log.Warn("cannot record announcement", zap.String("store_path", ev.StorePath), zap.Error(err))
	}
	return nil
}

// notYetValid turns "not in the store" into an error that is retried a
// bounded number of times: on a Hydra master the outputs of a remote build
// arrive after the builder's hook fired, and a path garbage-collected since
// its build ends as an "exhausted" dead letter instead of a silent loss.
func notYetValid(err error) error {
	if errors.Is(err, nixstore.ErrNotValid) {
		return errs.E(errs.NotYet, err)
	}
	return err
}

func baseNames(paths []string) []string {
	out := make([]string, 0, len(paths))
	for _, r := range paths {
		out = append(out, path.Base(r))
	}
	return out
}

type countWriter struct{ n uint64 }

func (c *countWriter) Write(b []byte) (int, error) { c.n += uint64(len(b)); return len(b), nil }

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// classifyIOErr makes disk errors transient (a full disk gets freed), and
// keeps an existing kind.
func classifyIOErr(err error) error {
	if errs.Classified(err) {
		return err
	}
	return errs.E(errs.Transient, err)
}
