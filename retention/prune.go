package retention

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/retention/announce"
)

// Unpinner is what prune needs from the local kubo.
type Unpinner interface {
	Unpin(ctx context.Context, c cid.Cid) error
}

// Executor carries out a Plan on a cache directory.
type Executor struct {
	Dir string
	// JS, if set, receives a "retired" event per path.
	JS jetstream.JetStream
	// Kubo, if set, unpins retired CIDs.
	Kubo Unpinner
	// Host names this host in the events.
	Host string
	// Grace is checked again just before each removal: a path the
	// publisher wrote or found present meanwhile stays (the grace
	// handshake: cachedir.Cache.Withdraw and WithdrawNAR).
	Grace       time.Duration
	Concurrency int
	Log         *zap.Logger
	// BatchSize is how many paths leave between directory syncs.
	BatchSize int
}

// Result is what a prune did.
type Result struct {
	Retired     int   `json:"retired"`
	NARsRemoved int   `json:"nars_removed"`
	OrphanNARs  int   `json:"orphan_nars_removed"`
	FreedBytes  int64 `json:"freed_bytes"`
	// Spared are paths that were to go but were written or found present
	// by the publisher while prune ran.
	Spared    int `json:"spared"`
	Restored  int `json:"restored"`
	Announced int `json:"announced"`
	Unpinned  int `json:"unpinned"`
	// Unfinished are retirements whose event or unpin failed; they stay
	// in the journal and the next prune finishes them.
	Unfinished int `json:"unfinished"`
}

// Run removes what p retires: per batch, every narinfo first (moved into
// the journal, atomically, out of what the cache serves), the directories
// synced, then an unpin per path, then the NARs no kept path shares, then
// a "retired" event per path, then the journal entry; a batch's NAR
// removals, events and journal entries overlap the next batch's
// narinfos. Killed at any point, the next run finishes from the journal.
func (x *Executor) Run(ctx context.Context, p *Plan) (Result, error) {
	if x.Log == nil {
		x.Log = zap.NewNop()
	}
	if x.Concurrency <= 0 {
		x.Concurrency = 16
	}
	if x.BatchSize <= 0 {
		// Each batch costs a few directory syncs, whose latency on a busy
		// disk is that of the whole file system's pending writes.
		x.BatchSize = 5000
	}
	var res Result
	c := x.cache()
	jdir := c.StatePath(cachedir.JournalDir)
	if err := c.MakeJournal(); err != nil {
		return res, fmt.Errorf("prune journal: %w", err)
	}
	for _, name := range p.journalNARs {
		if err := c.PutBackNAR(name); err != nil {
			return res, err
		}
	}
	for _, h := range p.shadowed {
		_ = c.DropJournalNarInfo(h)
	}
	for _, h := range p.restore {
		if err := x.restore(h); err != nil {
			return res, err
		}
		res.Restored++
	}
	if len(p.restore) > 0 {
		if err := atomicfile.SyncDir(x.Dir); err != nil {
			return res, err
		}
	}
	// Four stages, a batch at a time, each a goroutine: this loop takes
	// a batch's narinfos out of the cache (into the journal); the next
	// unpins it and removes its NARs; the next announces it (encoding,
	// then the stream's acks); the last drops its journal entries. The
	// renames and removals serialize on their directory (the first
	// stage's on the cache's, the second's on nar/, and all on the
	// journal's): one stage at a time leaves a CPU idle, which the stages
	// of the batches before now take (issue 24). Within a batch the order is as
	// it was: its NARs go only once its narinfos are out and synced, a
	// retirement is announced only once its NAR is gone, and leaves the
	// journal only once announced.
	var errsSeen []error
	pl := x.pipeline(ctx)
	// stop waits for what the stages hold, and counts what they did.
	stop := func(err error) (Result, error) {
		pl.stop(&res)
		return res, err
	}
	for start := 0; start < p.Retire.Len(); start += x.BatchSize {
		if err := ctx.Err(); err != nil {
			return stop(err)
		}
		if err := pl.failed(); err != nil {
			return stop(err)
		}
		// A batch of its own: the later stages may still hold the last.
		batch := make([]Retirement, 0, min(x.BatchSize, p.Retire.Len()-start))
		for i := start; i < min(start+x.BatchSize, p.Retire.Len()); i++ {
			batch = append(batch, p.Retire.At(i))
		}
		moved, err := x.moveOut(batch, &res)
		if err != nil {
			return stop(err)
		}
		pl.remove <- moved
	}
	errsSeen = append(errsSeen, pl.stop(&res)...)
	if err := pl.failed(); err != nil {
		return res, err
	}
	for _, url := range p.OrphanNARs {
		if size, ok := c.RemoveOldNAR(url, max(x.Grace, OrphanAge)); ok {
			res.OrphanNARs++
			res.FreedBytes += size
		}
	}
	if len(errsSeen) > 0 {
		return res, fmt.Errorf("%d retirements unfinished (they stay in the journal %s; run prune again): %w",
			res.Unfinished, jdir, errors.Join(errsSeen...))
	}
	return res, nil
}

// cache is the directory x prunes.
func (x *Executor) cache() cachedir.Cache { return cachedir.Cache{Dir: x.Dir} }

func (x *Executor) restore(h string) error {
	if err := x.cache().Restore(h); err != nil {
		return err
	}
	x.logRestored(h)
	return nil
}

func (x *Executor) logRestored(h string) {
	x.Log.Info("kept after all: moved back from the prune journal", zap.String("hash", h))
}

// moveOut takes the batch's narinfos out of the cache, into the journal,
// and syncs both directories. It returns the retirements to carry on with.
func (x *Executor) moveOut(batch []Retirement, res *Result) ([]Retirement, error) {
	jdir := x.cache().StatePath(cachedir.JournalDir)
	type outcome struct {
		moved, spared bool
		err           error
	}
	outs := make([]outcome, len(batch))
	x.parallel(len(batch), func(i int) {
		o := &outs[i]
		o.moved, o.spared, o.err = x.moveOne(batch[i])
	})
	moved := batch[:0] // in place: a batch is thousands of retirements
	for i, o := range outs {
		if o.err != nil {
			return moved, o.err
		}
		if o.spared {
			res.Spared++
		}
		if o.moved {
			moved = append(moved, batch[i])
		}
	}
	if err := atomicfile.SyncDir(x.Dir); err != nil {
		return moved, err
	}
	if err := atomicfile.SyncDir(jdir); err != nil {
		return moved, err
	}
	return moved, nil
}

// moveOne moves one narinfo out of the cache into the journal, unless it
// is fresh: prune's half of the grace handshake (cachedir.Cache.Withdraw).
func (x *Executor) moveOne(r Retirement) (moved, spared bool, err error) {
	if r.Journal {
		return true, false, nil
	}
	w, err := x.cache().Withdraw(r.HashPart, x.Grace)
	if err != nil {
		return false, false, fmt.Errorf("prune %s: %w", r.StorePath, err)
	}
	switch w {
	case cachedir.Reclaimed:
		x.logRestored(r.HashPart)
		return false, true, nil
	case cachedir.Spared:
		return false, true, nil
	case cachedir.Withdrawn:
		return true, false, nil
	}
	return false, false, nil // gone meanwhile
}

// parallel runs fn(0..n-1) on x.Concurrency goroutines: file system
// operations that each wait on the disk overlap.
func (x *Executor) parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(x.Concurrency, max(n, 1)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// removeNARs removes the NARs of paths already out of the cache, several
// at once (each removal waits on the disk); a NAR written again meanwhile
// (a publish of the same bytes) stays.
func (x *Executor) removeNARs(moved []Retirement, res *Result) error {
	type outcome struct {
		bytes int64
		done  bool
		err   error
	}
	outs := make([]outcome, len(moved))
	for _, r := range moved {
		res.Retired++
		res.FreedBytes += r.InfoSize
	}
	x.parallel(len(moved), func(i int) {
		if moved[i].RemoveNAR {
			o := &outs[i]
			o.bytes, o.done, o.err = x.removeNAR(moved[i])
		}
	})
	removed := false
	for _, o := range outs {
		if o.err != nil {
			return o.err
		}
		if o.done {
			res.NARsRemoved++
			res.FreedBytes += o.bytes
			removed = true
		}
	}
	if removed {
		return atomicfile.SyncDir(x.cache().NarDir())
	}
	return nil
}

// removeNAR removes one retired path's NAR and reports its size, unless
// the publisher put it in place again within grace (the grace handshake,
// cachedir.Cache.WithdrawNAR).
func (x *Executor) removeNAR(r Retirement) (int64, bool, error) {
	size, removed, err := x.cache().WithdrawNAR(r.URL, x.Grace)
	if err != nil {
		return 0, false, fmt.Errorf("prune %s: %w", r.StorePath, err)
	}
	return size, removed, nil
}

// unpin unpins the CIDs of the moved paths on this host's kubo, and returns
// the paths to carry on with: a path whose unpin failed stays in the
// journal, its NAR in place, for the next prune.
func (x *Executor) unpin(ctx context.Context, moved []Retirement, res *Result) ([]Retirement, error) {
	if x.Kubo == nil {
		return moved, nil
	}
	type outcome struct {
		ok  bool
		err error
	}
	outs := make([]outcome, len(moved))
	var wg sync.WaitGroup
	sem := make(chan struct{}, x.Concurrency)
	for i, r := range moved {
		if r.CID == "" {
			outs[i].ok = true
			continue
		}
		c, err := cid.Decode(r.CID)
		if err != nil {
			x.Log.Warn("retired path's IPFSHash does not parse; nothing to unpin", zap.String("store_path", r.StorePath), zap.Error(err))
			outs[i].ok = true
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := x.Kubo.Unpin(ctx, c); err != nil {
				outs[i].err = fmt.Errorf("unpin %s (%s) on this host's kubo: %w", r.CID, r.StorePath, err)
				return
			}
			outs[i].ok = true
		}()
	}
	wg.Wait()
	keep := moved[:0] // in place, as moveOut
	var failed []error
	for i, o := range outs {
		switch {
		case o.ok:
			keep = append(keep, moved[i])
			if moved[i].CID != "" {
				res.Unpinned++
			}
		default:
			res.Unfinished++
			if len(failed) < 5 {
				failed = append(failed, o.err)
			}
		}
	}
	return keep, errors.Join(failed...)
}

// stages are the stages of a prune after a batch's narinfos left the
// cache: its unpins and NAR removals, its announcement and its journal
// entries' removal, each a goroutine.
type stages struct {
	remove chan []Retirement
	done   chan struct{}
	// res is what the stages did: Retired, NARsRemoved, FreedBytes and
	// Unpinned from the first, Announced and Unfinished from all.
	res  Result
	errs []error
	// fatal is the error that stopped the NAR stage (a file system
	// failing): Run returns it. Set before done closes; read through
	// failed meanwhile.
	mu      sync.Mutex
	fatal   error
	stopped bool
}

// announced is a batch whose events went out, errs[i] saying which of
// them failed.
type announced struct {
	moved []Retirement
	errs  []error
}

func (x *Executor) pipeline(ctx context.Context) *stages {
	st := &stages{remove: make(chan []Retirement, 1), done: make(chan struct{})}
	announce := make(chan []Retirement, 1)
	forget := make(chan announced, 1)
	var removeRes, forgetRes Result
	var unpinErrs []error
	go func() {
		defer close(announce)
		for moved := range st.remove {
			if st.failed() != nil {
				continue // drain: Run stops sending
			}
			// A's kubo lets go before the NAR file does: with
			// --ipfs-nocopy the pinned blocks are that file.
			moved, err := x.unpin(ctx, moved, &removeRes)
			if err != nil {
				unpinErrs = append(unpinErrs, err)
			}
			if err := x.removeNARs(moved, &removeRes); err != nil {
				st.mu.Lock()
				st.fatal = err
				st.mu.Unlock()
				continue
			}
			announce <- moved
		}
	}()
	go func() {
		defer close(forget)
		for moved := range announce {
			forget <- announced{moved, x.announce(ctx, moved)}
		}
	}()
	go func() {
		defer close(st.done)
		for a := range forget {
			if err := x.forget(a.moved, a.errs, &forgetRes); err != nil {
				st.errs = append(st.errs, err)
			}
		}
		// Every stage has ended (forget closes after announce, which
		// closes after the NAR stage): their results are final.
		st.res = removeRes
		st.res.Announced, st.res.Unfinished = forgetRes.Announced, removeRes.Unfinished+forgetRes.Unfinished
		st.errs = append(unpinErrs, st.errs...)
	}()
	return st
}

// failed is the error that stopped the NAR stage, if any.
func (st *stages) failed() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.fatal
}

// stop waits for the batches handed on to pass every stage, adds what
// they did to res, and returns the errors they met. Only the first call
// does.
func (st *stages) stop(res *Result) []error {
	if st.stopped {
		return nil
	}
	st.stopped = true
	close(st.remove)
	<-st.done
	res.Retired += st.res.Retired
	res.NARsRemoved += st.res.NARsRemoved
	res.FreedBytes += st.res.FreedBytes
	res.Unpinned += st.res.Unpinned
	res.Announced += st.res.Announced
	res.Unfinished += st.res.Unfinished
	return st.errs
}

// announce publishes a "retired" event for each path and says which
// failed: a path whose event was not stored stays in the journal for the
// next run.
func (x *Executor) announce(ctx context.Context, moved []Retirement) []error {
	if x.JS == nil {
		return make([]error, len(moved))
	}
	paths := make([]announce.Path, len(moved))
	for i, r := range moved {
		paths[i] = announce.Path{StorePath: r.StorePath, NarHash: r.NarHash, NarSize: int64(r.NarSize), CID: r.CID, Reason: r.Why()}
	}
	return announce.Retired(ctx, x.JS, x.Host, paths)
}

// forget forgets each path announced (errsOf[i] nil): its journal entry
// and the publisher's record of its announcement.
func (x *Executor) forget(moved []Retirement, errsOf []error, res *Result) error {
	x.parallel(len(moved), func(i int) {
		if errsOf[i] != nil {
			return
		}
		c := x.cache()
		c.ForgetAnnounced(moved[i].HashPart)
		if err := c.DropJournalNarInfo(moved[i].HashPart); err != nil {
			errsOf[i] = err
		}
	})
	var failed []error
	for i := range moved {
		if errsOf[i] == nil && x.JS != nil {
			res.Announced++
		}
		if errsOf[i] != nil {
			res.Unfinished++
			if len(failed) < 5 {
				failed = append(failed, errsOf[i])
			}
		}
	}
	return errors.Join(failed...)
}
