// Package spool holds the NARs a substituter reads from IPFS, each in an
// unlinked file, while they are read and checked, shared by every request
// for the same NAR; it reads NARs ahead of their request (from their
// narinfo: Nix asks for a closure's narinfos first), and keeps NARs read
// and checked for a next request. What a read is (IPFS, hashing, the
// upstream taking over) is the caller's: Options.Fetch.
//
// An entry's life is a state machine (entryState): ahead of its request,
// wanted by requests, kept for the next one, ending, closed. Every read
// runs on a goroutine of the Spool's and every expiry on a timer of the
// Spool's, under a context made by New; Close cancels them and waits.
package spool

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// NAR is what the spool needs to know of a NAR: where it is asked for,
// its place in the closure (to read first what Nix will ask for first),
// and what identifies its bytes.
type NAR struct {
	Key        string   // the request path, /nar/...
	StorePath  string   // absolute
	Base       string   // store path basename
	References []string // basenames
	CID        cid.Cid
	NarHash    []byte // SHA-256 digest
	NarSize    uint64
}

// same reports whether a and b are the same bytes.
func same(a, b NAR) bool {
	return a.CID.Equals(b.CID) && a.NarSize == b.NarSize && string(a.NarHash) == string(b.NarHash)
}

// Options configure a Spool. Fetch is required.
type Options[R any] struct {
	// MaxBytes bounds the bytes of the NARs in the spool at once (zero or
	// less: unbounded); a NAR that does not fit is refused (Acquire's ok).
	MaxBytes int64
	// PrefetchAhead bounds the NARs read ahead of their request (zero or
	// less: none), PrefetchMaxBytes their total size (one NAR is always
	// allowed), PrefetchTTL how long one read waits for its request.
	PrefetchAhead    int
	PrefetchMaxBytes int64
	PrefetchTTL      time.Duration
	// KeepBytes bounds the NARs kept, read and checked, after their last
	// request (zero or less: none kept); KeepTTL is how long one is kept.
	KeepBytes int64
	KeepTTL   time.Duration

	// Fetch reads e's NAR into an unlinked file, checked against e.NAR,
	// reporting its writes to e.Progress, and returns the file positioned
	// at its start, or why not. It runs on a goroutine of the Spool's;
	// ctx ends when no request wants the NAR any more, or at Close.
	Fetch func(ctx context.Context, e *Entry[R]) (*os.File, error)
	// Trust says, as a read begins, why its CID is trusted to hold its
	// NAR (Entry.Trust), or "". Nil trusts none.
	Trust func(n NAR, ref R) string
	// Now is the clock of the expiries (default time.Now).
	Now func() time.Time
	// Log and the counters may be nil.
	Log *zap.Logger
	// Prefetches counts read-ahead NARs by outcome (used, unrequested);
	// KeptHits the requests answered from a kept NAR.
	Prefetches *prometheus.CounterVec
	KeptHits   prometheus.Counter
}

// entryState is where an entry is in its life.
type entryState int

const (
	// fresh: made, not in the table yet: its first move puts it there.
	fresh entryState = iota
	// ahead: read ahead of its request (a prefetch), not requested yet;
	// counted against PrefetchAhead. Once read it waits for its request
	// until expires.
	ahead
	// wanted: a request holds it (users), or held it while its read was
	// under way.
	wanted
	// kept: read and checked, held by no request, kept for the next one
	// until expires, within KeepBytes.
	kept
	// ending: given to no new request (every request for it went away
	// before its read ended, or another narinfo's NAR took its path);
	// closed once no request holds it and its read has ended, its read
	// cancelled as soon as no request holds it.
	ending
	// closed: its file closed, its share of MaxBytes released, out of
	// the table.
	closed
)

var stateNames = [...]string{fresh: "fresh", ahead: "ahead", wanted: "wanted", kept: "kept", ending: "ending", closed: "closed"}

func (s entryState) String() string { return stateNames[s] }

// Entry is one NAR in the spool. Its fields are set when it is made;
// Err, Took and UpstreamBytes once Done is closed.
type Entry[R any] struct {
	NAR NAR
	// Ref is the caller's description of the NAR, handed back to Fetch.
	Ref R
	// Trust is why the CID was trusted when the read began
	// (Options.Trust), or "".
	Trust    string
	Progress *Progress

	done          chan struct{}
	f             *os.File // the checked NAR, once done without Err
	Err           error
	Took          time.Duration // reading and checking
	UpstreamBytes int64         // set by Fetch: of a trusted read, from upstream after IPFS failed

	cancel context.CancelFunc
	// Guarded by Spool.mu.
	state   entryState
	users   int       // requests holding it
	expires time.Time // ahead once read, and kept: dropped after this
}

// Done is closed when the read has ended.
func (e *Entry[R]) Done() <-chan struct{} { return e.done }

// IsDone reports whether the read has ended.
func (e *Entry[R]) IsDone() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// Open returns a reader of the checked NAR of its own (others may be
// sending the same file): see reopen. Only for an entry done without Err,
// while it is held.
func (e *Entry[R]) Open() (io.ReadSeekCloser, error) {
	return reopen(e.f, int64(e.NAR.NarSize))
}

// Spool is the table of NARs by request path, and the read-ahead queue
// feeding it.
type Spool[R any] struct {
	o   Options[R]
	log *zap.Logger

	// ctx ends every read and timer at Close; wg counts them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closing bool
	timers  map[*time.Timer]struct{}
	entries map[string]*Entry[R]
	used    int64 // bytes of the NARs not closed, against MaxBytes
	// pending read-aheads, by request path, waiting for a free slot, and
	// their store path basenames.
	pending      map[string]pendingNAR[R]
	pendingBases map[string]bool
	// entries ahead, and their total size.
	ahead      int
	aheadBytes int64
	// kept entries, oldest first, and their total size.
	kept      []*Entry[R]
	keptBytes int64
}

type pendingNAR[R any] struct {
	nar NAR
	ref R
}

// New returns an empty Spool. Close ends it.
func New[R any](o Options[R]) *Spool[R] {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Trust == nil {
		o.Trust = func(NAR, R) string { return "" }
	}
	p := &Spool[R]{o: o, log: o.Log, timers: map[*time.Timer]struct{}{}, entries: map[string]*Entry[R]{},
		pending: map[string]pendingNAR[R]{}, pendingBases: map[string]bool{}}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// Close drops the kept NARs, cancels every read and timer, waits for
// them, and closes every entry no request holds; the others are closed as
// their requests let go. No read starts after Close.
func (p *Spool[R]) Close() error {
	p.mu.Lock()
	p.closing = true
	for t := range p.timers {
		if t.Stop() {
			p.wg.Done()
		}
	}
	clear(p.timers)
	clear(p.pending)
	clear(p.pendingBases)
	for len(p.kept) > 0 {
		p.to(p.kept[0], closed)
	}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	// Every read has ended: what no request holds goes now (NARs read
	// ahead, reads Close cut short); the rest as their requests let go.
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.entries {
		if e.users == 0 {
			p.to(e, closed)
		}
	}
	return nil
}

// Acquire returns the entry for n, starting its read if there is none,
// and holds it for one request until Release. ok is false when MaxBytes
// has no room for it (or the Spool is closed).
func (p *Spool[R]) Acquire(n NAR, ref R) (e *Entry[R], ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked()
	p.unqueueLocked(n.Key)
	if e := p.entries[n.Key]; e != nil && e.state != ending && same(e.NAR, n) {
		switch e.state {
		case kept:
			p.inc(p.o.KeptHits)
		case ahead:
			p.incVec(p.o.Prefetches, "used")
		}
		p.to(e, wanted)
		e.users++
		p.scheduleLocked()
		return e, true
	}
	e = p.startLocked(n, ref, wanted)
	if e == nil {
		return nil, false
	}
	e.users = 1
	return e, true
}

// Release gives back one request's hold on e.
func (p *Spool[R]) Release(e *Entry[R]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.users--
	p.settleLocked(e)
	p.scheduleLocked()
}

// startLocked begins reading n into a new entry in state st, or returns
// nil when MaxBytes has no room. A previous entry for the same path (of
// another narinfo) is forgotten; its holders keep their file.
func (p *Spool[R]) startLocked(n NAR, ref R, st entryState) *Entry[R] {
	if p.closing {
		return nil
	}
	for !p.reserveLocked(int64(n.NarSize)) {
		// NARs kept for a next request give way to one requested now.
		if len(p.kept) == 0 {
			return nil
		}
		p.to(p.kept[0], closed)
	}
	if old := p.entries[n.Key]; old != nil {
		if old.state == kept {
			p.to(old, closed)
		} else {
			p.to(old, ending)
			p.settleLocked(old)
		}
	}
	ctx, cancel := context.WithCancel(p.ctx)
	e := &Entry[R]{NAR: n, Ref: ref, Trust: p.o.Trust(n, ref), Progress: NewProgress(), done: make(chan struct{}), cancel: cancel}
	p.to(e, st) // in the table now, in old's place if there was one
	p.wg.Add(1)
	go p.read(ctx, e)
	return e
}

// read runs e's Fetch, then lets e move on.
func (p *Spool[R]) read(ctx context.Context, e *Entry[R]) {
	defer p.wg.Done()
	start := time.Now()
	f, err := p.o.Fetch(ctx, e)
	p.mu.Lock()
	defer p.mu.Unlock()
	e.f, e.Err, e.Took = f, err, time.Since(start)
	if e.state == ahead {
		e.expires = p.o.Now().Add(p.o.PrefetchTTL)
		p.afterLocked(p.o.PrefetchTTL + time.Second)
	}
	close(e.done)
	p.settleLocked(e)
	p.scheduleLocked()
}

// settleLocked moves e on once something that held it has let go: a
// request, its read, or the time it was kept for.
func (p *Spool[R]) settleLocked(e *Entry[R]) {
	if e.users > 0 {
		return
	}
	switch e.state {
	case ahead, kept:
		if p.expiredLocked(e) {
			p.to(e, closed)
		}
	case wanted:
		switch {
		case !e.IsDone():
			// Every request for it went away: the read is no longer
			// wanted. It comes back here once it has ended.
			p.to(e, ending)
			e.cancel()
		case p.keepableLocked(e):
			p.to(e, kept)
		default:
			p.to(e, closed)
		}
	case ending:
		if e.IsDone() {
			p.to(e, closed)
		} else {
			e.cancel()
		}
	}
}

// to moves e to state st: the one place an entry changes state, and so
// the one place the table, the count and bytes of entries ahead, the kept
// list and MaxBytes follow it. (An entry leaves the table when it closes,
// or when another takes its path; whether it is in the table is read from
// the table, never kept in the entry.)
func (p *Spool[R]) to(e *Entry[R], st entryState) {
	if e.state == st {
		return
	}
	size := int64(e.NAR.NarSize)
	from := e.state
	switch from {
	case fresh:
		p.entries[e.NAR.Key] = e
	case ahead:
		p.ahead--
		p.aheadBytes -= size
		e.expires = time.Time{}
	case kept:
		if i := slices.Index(p.kept, e); i >= 0 {
			p.kept = slices.Delete(p.kept, i, i+1)
		}
		p.keptBytes -= size
		e.expires = time.Time{}
	case closed:
		panic(fmt.Sprintf("spool: entry %s moved on from closed", e.NAR.Key))
	}
	e.state = st
	switch st {
	case fresh:
		panic(fmt.Sprintf("spool: entry %s moved back to fresh", e.NAR.Key))
	case ahead:
		if from != fresh {
			panic(fmt.Sprintf("spool: entry %s moved back ahead", e.NAR.Key))
		}
		p.ahead++
		p.aheadBytes += size
	case kept:
		for p.keptBytes+size > p.o.KeepBytes && len(p.kept) > 0 {
			p.to(p.kept[0], closed)
		}
		e.expires = p.o.Now().Add(p.o.KeepTTL)
		p.kept = append(p.kept, e)
		p.keptBytes += size
		p.afterLocked(p.o.KeepTTL + time.Second)
	case closed:
		if p.entries[e.NAR.Key] == e {
			delete(p.entries, e.NAR.Key)
		}
		if e.f != nil {
			e.f.Close()
			e.f = nil
		}
		p.releaseLocked(size)
		e.cancel()
	}
}

// keepableLocked reports whether e, read, requested and no longer held,
// is kept for the next request for it: read and checked, still the
// table's entry for its path, and KeepBytes allowing (one NAR is always
// kept, as one is always read ahead).
// Its file was checked against the narinfo when it was written, and only
// this process has it open (it is unlinked), so sending it again sends
// the same proved bytes.
func (p *Spool[R]) keepableLocked(e *Entry[R]) bool {
	return p.o.KeepBytes > 0 && e.Err == nil && e.f != nil && p.entries[e.NAR.Key] == e && !p.closing
}

func (p *Spool[R]) expiredLocked(e *Entry[R]) bool {
	return !e.expires.IsZero() && !p.o.Now().Before(e.expires)
}

// afterLocked sweeps the spool in d: a timer of the Spool's, stopped by
// Close.
func (p *Spool[R]) afterLocked(d time.Duration) {
	if p.closing {
		return
	}
	p.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		defer p.wg.Done()
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.timers, t)
		if p.closing {
			return
		}
		p.sweepLocked()
		p.scheduleLocked()
	})
	p.timers[t] = struct{}{}
}

// sweepLocked drops NARs read ahead that nobody asked for in PrefetchTTL,
// and kept NARs not asked for again in KeepTTL.
func (p *Spool[R]) sweepLocked() {
	for _, e := range slices.Clone(p.kept) {
		p.settleLocked(e)
	}
	for _, e := range p.entries {
		if e.state == ahead && p.expiredLocked(e) {
			p.log.Debug("prefetched NAR not requested in time; dropped", zap.String("url", e.NAR.Key), zap.String("cid", e.NAR.CID.String()))
			p.incVec(p.o.Prefetches, "unrequested")
			p.settleLocked(e)
		}
	}
}

func (p *Spool[R]) reserveLocked(n int64) bool {
	if p.o.MaxBytes > 0 && p.used+n > p.o.MaxBytes {
		return false
	}
	p.used += n
	return true
}

func (p *Spool[R]) releaseLocked(n int64) { p.used -= n }

func (p *Spool[R]) inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func (p *Spool[R]) incVec(c *prometheus.CounterVec, label string) {
	if c != nil {
		c.WithLabelValues(label).Inc()
	}
}
