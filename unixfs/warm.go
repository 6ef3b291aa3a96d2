package unixfs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// Fetcher makes a daemon hold a block without handing its bytes over:
// kubo's RPC block/stat, which fetches a missing block from peers into the
// daemon's store.
type Fetcher interface {
	Fetch(ctx context.Context, c cid.Cid) error
}

// ListFetcher is a Fetcher that can also fetch a list of blocks in one
// request, in the list's order (kubo: one bitswap session for the whole
// list, where Fetch is a session a block; ipfs/warm). got(i) is called as
// list[i] is held, in list order.
type ListFetcher interface {
	FetchList(ctx context.Context, list []cid.Cid, got func(i int)) error
}

// Haver says whether a block is already held (a local block store); a
// Warmer asks it first, so a file already here costs no round trips.
type Haver interface {
	Has(c cid.Cid) bool
}

// Warmer fills a daemon's block store with a file's blocks before the file
// is read: the leaves in a random order, many at once, rather than in the
// order a reader needs them. Why: when several clients on one network
// fetch the same file at once, a reader's depth-first order makes them all
// ask the mirror for the same block at the same moment, and the mirror
// sends each of them a copy. Asked in independent random orders, with
// many blocks outstanding, most blocks are asked of the mirror by one
// client first and by the others only later, when the first already holds
// it and answers as fast as the mirror (docs/BENCHMARKS.md, fan-out).
//
// With a ListFetcher and a Haver, the leaves not held (MinList or more)
// go as one list, in the shuffled order (fetchList); otherwise a request a
// leaf. A block asked for that does not come while later ones do (bitswap
// can leave a want unanswered until its rebroadcast, a minute later) is
// asked again: see stallTracker and fetchList. A Warmer is shared by all
// the files read at once, so Parallel bounds the single requests
// outstanding for the whole process; a list's are bounded by the daemon
// (kubo: 64 a bitswap session).
type Warmer struct {
	// Parallel is how many blocks are asked for at once, one request
	// each, over all files.
	Parallel int
	// Lists, if set, says whether a ListFetcher's lists may be used now;
	// nil: always. A list's one session asks a peer for a block it may
	// not have yet, and a peer that gets it later sends it all the same:
	// in a mesh of clients fetching one closure (a fleet on a LAN) that
	// made 45% more blocks arrive (bench, fan-out). A request a block
	// asks every peer whether it has the block first, and only one that
	// has it for the block.
	Lists func() bool
	// Stall is how long a block may be outstanding before it is asked
	// again, if the fetch is otherwise making progress.
	Stall time.Duration

	once sync.Once
	sem  chan struct{}
}

// DefaultWarmStall is the Stall of a Warmer that sets none.
const DefaultWarmStall = 2 * time.Second

// WarmStats is what one Warm did.
type WarmStats struct {
	Blocks  int // blocks of the file, the root included
	Fetched int // of those, fetched (the rest were held already)
	Retries int // requests cancelled as stalled and made again
	// ListErr is why the list was given up for a request a block, if it
	// was (a daemon that refused it).
	ListErr error
}

func (w *Warmer) slots() chan struct{} {
	w.once.Do(func() {
		n := w.Parallel
		if n < 1 {
			n = 1
		}
		w.sem = make(chan struct{}, n)
	})
	return w.sem
}

// Warm makes f hold every block of the UnixFS file c. Nodes with links are
// read through src (the daemon's Block, which fetches them), level by
// level; the leaves are fetched through f in a random order. has, if not
// nil, says which blocks are held already. progress, if not nil, is called
// after each block arrives (a watchdog's Progress). Warm is best effort:
// whatever it did not fetch, the file's reader fetches in its turn, so an
// error says only that the store may lack some blocks.
func (w *Warmer) Warm(ctx context.Context, src Source, f Fetcher, has Haver, c cid.Cid, progress func()) (WarmStats, error) {
	var st WarmStats
	if progress == nil {
		progress = func() {}
	}
	level := []cid.Cid{c}
	var leaves []cid.Cid
	for depth := 0; len(level) > 0; depth++ {
		if depth > MaxDepth {
			return st, errs.Errorf(errs.Corrupt, "%s: the file's DAG is deeper than %d", c, MaxDepth)
		}
		var next []cid.Cid
		var mu sync.Mutex
		err := w.each(ctx, level, func(ctx context.Context, n cid.Cid) error {
			if _, ok := identity(n); ok {
				return nil
			}
			if n.Type() == cid.Raw {
				mu.Lock()
				leaves = append(leaves, n)
				mu.Unlock()
				return nil
			}
			data, err := src.Block(ctx, n)
			if err != nil {
				return err
			}
			progress()
			pn, err := merkledag.DecodeProtobuf(data)
			if err != nil {
				return errs.Errorf(errs.Corrupt, "block %s: not dag-pb: %w", n, err)
			}
			mu.Lock()
			defer mu.Unlock()
			st.Blocks++
			for _, l := range pn.Links() {
				next = append(next, l.Cid)
			}
			return nil
		})
		if err != nil {
			return st, err
		}
		level = next
	}
	st.Blocks += len(leaves)
	var missing []cid.Cid
	for _, l := range leaves {
		if _, ok := identity(l); ok || (has != nil && has.Has(l)) {
			continue
		}
		missing = append(missing, l)
	}
	rand.Shuffle(len(missing), func(i, j int) { missing[i], missing[j] = missing[j], missing[i] })
	st.Fetched = len(missing)
	stall := w.Stall
	if stall <= 0 {
		stall = DefaultWarmStall
	}
	if lf, ok := f.(ListFetcher); ok && has != nil && len(missing) >= MinList && (w.Lists == nil || w.Lists()) {
		var err error
		missing, err = w.fetchList(ctx, lf, has, missing, stall, progress, &st)
		if err != nil || len(missing) == 0 {
			return st, err
		}
	}
	t := newStallTracker(stall, 2*cap(w.slots()), time.Now)
	stop := t.watch()
	err := w.each(ctx, missing, func(ctx context.Context, l cid.Cid) error {
		err := t.fetch(ctx, l, f.Fetch)
		if err == nil {
			progress()
		}
		return err
	})
	stop()
	st.Retries = t.retries()
	return st, err
}

// MinList is the fewest missing leaves a ListFetcher is given as a list:
// below it, a request a block costs less than the list's three (the list
// stored, fetched, removed).
const MinList = 8

// fetchList fetches list through lf, in its order. A list whose next
// block stalled (listRun) is cancelled and made again with the blocks not
// yet held (those come in the meantime are not asked for again): bitswap
// can leave a want unanswered until its rebroadcast, a minute later, and
// the daemon names a list's blocks in order. If lf fails otherwise (a
// daemon that refuses the list), the blocks not yet held are returned,
// for the caller to fetch a block at a time.
func (w *Warmer) fetchList(ctx context.Context, lf ListFetcher, has Haver, list []cid.Cid, stall time.Duration, progress func(), st *WarmStats) (rest []cid.Cid, err error) {
	for len(list) > 0 {
		r := newListRun(list, has, stall, progress)
		next, stalled, err := r.run(ctx, lf)
		if err == nil {
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if !stalled {
			st.ListErr = err
		}
		var left []cid.Cid
		for _, c := range list[next:] {
			if !has.Has(c) {
				left = append(left, c)
			}
		}
		if !stalled {
			return left, nil
		}
		st.Retries++
		list = left
	}
	return nil, nil
}

// A list's session keeps listWants of its blocks asked for at once (boxo's
// live-want limit), the first not yet come, in list order.
const listWants = 64

// listRun is one FetchList under watch. Its blocks come in any order, but
// the daemon names them in the list's order, so one held back hides those
// after it. So each tick the Haver is asked about the window of the list
// after the last block named (where the session's wants are), and every
// block found is reported to progress as it comes: a watchdog, and a
// fleet's client deciding whether its LAN gives it anything, must see
// blocks that came, not blocks named. The list stalled when its next block
// has not come for stall and either nothing came for stall or
// 2*listWants blocks after it came (the session moved on without it), as
// for single requests (stallTracker).
type listRun struct {
	list     []cid.Cid
	has      Haver
	stall    time.Duration
	progress func()

	mu     sync.Mutex
	next   int       // blocks named, in order
	seen   []bool    // blocks known to have come
	headAt time.Time // when next last moved
	lastAt time.Time // when a block last came
	after  int       // blocks past next found since next last moved
}

// listWindow is how far past the next block named the Haver is asked:
// the session's wants and then some.
const listWindow = 4 * listWants

func newListRun(list []cid.Cid, has Haver, stall time.Duration, progress func()) *listRun {
	now := time.Now()
	return &listRun{list: list, has: has, stall: stall, progress: progress, seen: make([]bool, len(list)), headAt: now, lastAt: now}
}

func (r *listRun) run(ctx context.Context, lf ListFetcher) (next int, stalled bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- lf.FetchList(ctx, r.list, r.got) }()
	tick := time.NewTicker(r.stall / 4)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.next, stalled, err
		case <-tick.C:
			if !stalled && r.poll() {
				stalled = true
				cancel()
			}
		}
	}
}

// got is FetchList's report of list[i], named in order.
func (r *listRun) got(i int) {
	r.mu.Lock()
	now := time.Now()
	r.next, r.headAt, r.after = i+1, now, 0
	fresh := !r.seen[i]
	r.seen[i] = true
	if fresh {
		r.lastAt = now
	}
	r.mu.Unlock()
	if fresh {
		r.progress()
	}
}

// poll finds the blocks come out of order, reports them, and says whether
// the list stalled.
func (r *listRun) poll() (stalled bool) {
	r.mu.Lock()
	now := time.Now()
	found := 0
	for i := r.next; i < min(r.next+listWindow, len(r.list)); i++ {
		if !r.seen[i] && r.has.Has(r.list[i]) {
			r.seen[i] = true
			found++
		}
	}
	if found > 0 {
		r.lastAt = now
		r.after += found
	}
	stalled = now.Sub(r.headAt) >= r.stall && (now.Sub(r.lastAt) >= r.stall || r.after >= 2*listWants)
	r.mu.Unlock()
	for range found {
		r.progress()
	}
	return stalled
}

// stallTracker finds the requests that stalled: outstanding for at least
// stall, and either overtaken (at least overtake requests made after it
// have been answered: the source is answering, but not this one) or alone
// in waiting (nothing answered for stall either). Age alone would not do:
// on a slow link every block waits its turn behind the others
// outstanding, and asking again would only move it to the back.
type stallTracker struct {
	stall    time.Duration
	overtake int64
	now      func() time.Time

	mu       sync.Mutex
	answered int64     // requests answered so far
	lastAns  time.Time // when the last was
	out      map[*attempt]struct{}
	retried  int
}

type attempt struct {
	started  time.Time
	answered int64 // the tracker's answered when this began
	cancel   context.CancelFunc
	stalled  bool
}

func newStallTracker(stall time.Duration, overtake int, now func() time.Time) *stallTracker {
	return &stallTracker{stall: stall, overtake: int64(overtake), now: now, lastAns: now(), out: map[*attempt]struct{}{}}
}

// fetch calls fn for c until it returns without having been found
// stalled.
func (t *stallTracker) fetch(ctx context.Context, c cid.Cid, fn func(context.Context, cid.Cid) error) error {
	for {
		actx, cancel := context.WithCancel(ctx)
		a := t.begin(cancel)
		err := fn(actx, c)
		stalled := t.end(a, err == nil)
		cancel()
		if err == nil || !stalled || ctx.Err() != nil {
			return err
		}
	}
}

func (t *stallTracker) begin(cancel context.CancelFunc) *attempt {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := &attempt{started: t.now(), answered: t.answered, cancel: cancel}
	t.out[a] = struct{}{}
	return a
}

// end records a's outcome and says whether it was cancelled as stalled.
func (t *stallTracker) end(a *attempt, ok bool) (stalled bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.out, a)
	if ok {
		t.answered++
		t.lastAns = t.now()
	}
	if a.stalled && !ok {
		t.retried++
	}
	return a.stalled
}

// stalled marks and returns the attempts that stalled (see stallTracker).
func (t *stallTracker) stalledNow() []*attempt {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	quiet := now.Sub(t.lastAns) >= t.stall
	var st []*attempt
	for a := range t.out {
		if a.stalled || now.Sub(a.started) < t.stall {
			continue
		}
		if quiet || t.answered-a.answered >= t.overtake {
			a.stalled = true
			st = append(st, a)
		}
	}
	return st
}

// watch cancels stalled attempts until the returned stop is called; stop
// waits for the goroutine it started.
func (t *stallTracker) watch() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(t.stall / 4)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				for _, a := range t.stalledNow() {
					a.cancel()
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (t *stallTracker) retries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.retried
}

// each runs fn on every CID, at most Parallel at once over the Warmer,
// and returns the first error. The stall tracker needs a clock running
// while fns wait, so it is started here and stopped when all are done.
func (w *Warmer) each(ctx context.Context, cids []cid.Cid, fn func(context.Context, cid.Cid) error) error {
	sem := w.slots()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, c := range cids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, c); err != nil {
				cancel(fmt.Errorf("block %s: %w", c, err))
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
