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
package publisher

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// IPFS is what the publisher needs from an IPFS node.
type IPFS interface {
	Add(ctx context.Context, r io.Reader, p ipfs.Params, pin bool) (cid.Cid, error)
	AddFile(ctx context.Context, path string, p ipfs.Params, pin bool) (cid.Cid, error)
	Self(ctx context.Context) (ipfs.Node, error)
}

var _ IPFS = (*ipfs.Kubo)(nil)

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
	sem   chan struct{}

	mu       sync.Mutex
	inflight map[string]*call

	// dirs shares directory fsyncs between paths published at once
	// (group commit): for small paths they were a quarter of the work.
	dirs atomicfile.DirSyncer

	selfMu   sync.Mutex
	self     ipfs.Node
	selfTime time.Time
}

type call struct {
	done chan struct{}
	ev   *events.Published
	err  error
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
		sem: make(chan struct{}, opt.Concurrency), inflight: map[string]*call{},
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

	var wg sync.WaitGroup
	errCh := make(chan error, len(closure))
	for _, sp := range closure {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.PublishPath(ctx, sp); err != nil {
				errCh <- fmt.Errorf("%s: %w", sp, err)
			}
		}()
	}
	wg.Wait()
	close(errCh)
	var all []error
	for err := range errCh {
		all = append(all, err)
	}
	if len(all) == 0 {
		return nil
	}
	// The worst kind decides what happens to the event.
	joined := errors.Join(all...)
	return errs.E(errs.Worst(all...), joined)
}

// PublishPath makes sure one store path is in the cache and in IPFS and has
// been announced, publishing it if not. Concurrent calls for the same path
// in this process share one publish.
func (p *Publisher) PublishPath(ctx context.Context, sp string) (*events.Published, error) {
	p.mu.Lock()
	if c, ok := p.inflight[sp]; ok {
		p.mu.Unlock()
		select {
		case <-c.done:
			return c.ev, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &call{done: make(chan struct{})}
	p.inflight[sp] = c
	p.mu.Unlock()

	c.ev, c.err = p.publishPath(ctx, sp)

	p.mu.Lock()
	delete(p.inflight, sp)
	p.mu.Unlock()
	close(c.done)
	return c.ev, c.err
}

func (p *Publisher) publishPath(ctx context.Context, sp string) (*events.Published, error) {
	start := time.Now()
	storeDir := p.store.StoreDir()
	if err := storepath.Validate(storeDir, sp); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	hashPart := storepath.HashPart(sp)
	log := p.log.With(zap.String("store_path", sp))

	// Contention for a path's lease is waited out here, on a short schedule
	// of its own: the holder usually finishes within seconds, and then the
	// path is found done. The event's failure backoff is for failures.
	for wait := 0; ; wait++ {
		ev, done, err := p.doneAlready(ctx, sp, hashPart, start)
		if done || err != nil {
			return ev, err
		}
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if p.opt.Locker == nil {
			defer func() { <-p.sem }()
			break
		}
		lctx, unlock, err := p.opt.Locker.Lock(ctx, hashPart, sp)
		if IsHeld(err) {
			<-p.sem // not while waiting: other paths may go ahead
			if wait == 0 {
				log.Info("waiting for another publisher's lease", zap.Error(err))
			}
			select {
			case <-time.After(lockRetryDelay(wait)):
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if err != nil {
			<-p.sem
			return nil, err
		}
		defer func() { <-p.sem }()
		defer unlock()
		// The holder may have finished it just before the lease came free.
		if ev, done, err := p.doneAlready(lctx, sp, hashPart, start); done || err != nil {
			return ev, err
		}
		ctx = lctx
		break
	}

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
// that becomes nar/<hash>.nar, and (unless nocopy) into kubo. It returns the
// narinfo with everything but the cache's signature.
func (p *Publisher) writeNAR(ctx context.Context, log *zap.Logger, info *nixstore.PathInfo) (*narinfo.NarInfo, error) {
	tmp, err := p.opt.Cache.CreateNAR()
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("nar temp file: %w", err))
	}
	defer tmp.Abort()

	h := sha256.New()
	counter := &countWriter{}
	var (
		c       cid.Cid
		addErr  error
		addDone chan struct{}
		pw      *io.PipeWriter
	)
	writers := []io.Writer{h, tmp, counter}
	if !p.opt.Params.Nocopy {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		writers = append(writers, pw)
		addDone = make(chan struct{})
		go func() {
			defer close(addDone)
			c, addErr = p.ipfs.Add(ctx, pr, p.opt.Params, true)
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
	dumpErr := dumpNAR(bw, info.Path)
	if dumpErr == nil {
		dumpErr = bw.Flush()
	}
	if pw != nil {
		pw.CloseWithError(dumpErr)
		<-addDone
	}
	if dumpErr != nil {
		// The side that failed first decides. When kubo failed, the NAR
		// writer only saw kubo's error echoed through the pipe; when our own
		// write failed (a full disk), kubo only saw ours as "reading input",
		// and the error must stay a transient disk error, not kubo's.
		if addErr != nil && errors.Is(dumpErr, addErr) {
			return nil, fmt.Errorf("add NAR of %s to IPFS: %w", info.Path, addErr)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classifyIOErr(fmt.Errorf("dump NAR of %s: %w", info.Path, dumpErr))
	}
	if addErr != nil {
		return nil, fmt.Errorf("add NAR of %s to IPFS: %w", info.Path, addErr)
	}

	narHash := "sha256:" + nixbase32.EncodeToString(h.Sum(nil))
	size := counter.n
	if narHash != info.NarHash || size != info.NarSize {
		return nil, errs.Errorf(errs.Corrupt,
			"store path %s is corrupt: its NAR hashes to %s (%d bytes) but the store recorded %s (%d bytes); run nix-store --verify --check-contents",
			info.Path, narHash, size, info.NarHash, info.NarSize)
	}
	url := cachedir.NarURL(narHash)
	// Rename into place; an existing file of this name has these very bytes.
	if err := tmp.CommitGrouped(p.opt.Cache.NarPath(url), &p.dirs); err != nil {
		return nil, classifyIOErr(fmt.Errorf("write NAR of %s: %w", info.Path, err))
	}
	if p.opt.Params.Nocopy {
		// The filestore references the file by path, so it must be in its
		// final place first.
		c, err = p.ipfs.AddFile(ctx, p.opt.Cache.NarPath(url), p.opt.Params, true)
		if err != nil {
			return nil, fmt.Errorf("add NAR of %s to IPFS (nocopy): %w", info.Path, err)
		}
	}

	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         url,
		Compression: "none",
		FileHash:    narHash,
		FileSize:    size,
		NarHash:     narHash,
		NarSize:     size,
		References:  baseNames(info.References),
		Sigs:        append([]string(nil), info.Sigs...),
		CA:          info.CA,
		IPFSHash:    c.String(),
	}
	if info.Deriver != "" {
		ni.Deriver = path.Base(info.Deriver)
	}
	return ni, nil
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

// dumpNAR writes the NAR serialisation of the file tree at p: byte for byte
// what nix-store --dump writes (entries sorted by name, executable when the
// owner may execute, symlink targets as they are). It stands in for go-nix's
// nar.DumpPath, whose writer refuses every directory entry whose name starts
// with ".." ("..a", "...", legal in Nix) as if it led out of the directory:
// a store path holding one could never be published, and its event was
// retried for ever (TestHostileStorePathNames, FuzzPublishedNARReadsBack).
func dumpNAR(w io.Writer, p string) error {
	if err := narStrings(w, "nix-archive-1"); err != nil {
		return err
	}
	return dumpNARNode(w, p)
}

func dumpNARNode(w io.Writer, p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return narStrings(w, "(", "type", "symlink", "target", target, ")")
	case fi.IsDir():
		if err := narStrings(w, "(", "type", "directory"); err != nil {
			return err
		}
		ents, err := os.ReadDir(p) // sorted by name bytes, as Nix sorts
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := narStrings(w, "entry", "(", "name", e.Name(), "node"); err != nil {
				return err
			}
			if err := dumpNARNode(w, filepath.Join(p, e.Name())); err != nil {
				return err
			}
			if err := narStrings(w, ")"); err != nil {
				return err
			}
		}
		return narStrings(w, ")")
	case fi.Mode().IsRegular():
		if err := narStrings(w, "(", "type", "regular"); err != nil {
			return err
		}
		if fi.Mode()&0o100 != 0 {
			if err := narStrings(w, "executable", ""); err != nil {
				return err
			}
		}
		if err := narStrings(w, "contents"); err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(fi.Size()))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if c, err := io.CopyN(w, f, fi.Size()); err != nil {
			return fmt.Errorf("%s: read %d of %d bytes: %w", p, c, fi.Size(), err)
		}
		if err := narPad(w, fi.Size()); err != nil {
			return err
		}
		return narStrings(w, ")")
	}
	return fmt.Errorf("%s: not a regular file, directory or symlink (%v)", p, fi.Mode().Type())
}

// narStrings writes each string as NAR does: its length as a little-endian
// uint64, its bytes, zeros up to a multiple of 8.
func narStrings(w io.Writer, ss ...string) error {
	var n [8]byte
	for _, s := range ss {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := io.WriteString(w, s); err != nil {
			return err
		}
		if err := narPad(w, int64(len(s))); err != nil {
			return err
		}
	}
	return nil
}

func narPad(w io.Writer, n int64) error {
	if r := n % 8; r != 0 {
		var zero [8]byte
		_, err := w.Write(zero[:8-r])
		return err
	}
	return nil
}
