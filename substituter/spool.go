package substituter

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"
)

// A spooled NAR is one read from IPFS into an unlinked file, checked
// against its narinfo, shared by every request for the same NAR and by the
// prefetcher. Its life:
//
//   - started by a NAR request (on demand) or by the narinfo that names it
//     (a prefetch, see prefetcher), on a context of its own: a client that
//     goes away does not abort a fetch others wait for;
//   - read: a request for a trusted CID follows the read as the file
//     fills (follow.go); others wait for it to be done;
//   - done: f holds the verified NAR, or err says why not;
//   - kept, once verified and no request holds it any more: the next
//     request for it is sent from the file, with no read from IPFS, for
//     KeepTTL, within KeepBytes for all kept NARs (oldest dropped first;
//     the last one is kept whatever its size);
//   - closed (its file and its share of the spool budget released) once no
//     request holds it and it is neither waiting, prefetched, for its
//     request nor kept.
type spoolEntry struct {
	key string
	ref *narRef
	c   cid.Cid
	// trust is why the CID was trusted when the read began (a trust*
	// label), or "": its requests follow the read, and IPFS failing
	// half-way is made up from upstream.
	trust    string
	progress *readProgress
	done     chan struct{}
	// Set before done is closed.
	f             *os.File
	err           error
	took          time.Duration // reading and checking
	upstreamBytes int64         // of a trusted read, from upstream after IPFS failed

	cancel context.CancelFunc
	// Guarded by spools.mu.
	users      int       // requests waiting for or sending it
	prefetched bool      // started ahead of its request, not yet requested
	expires    time.Time // for a prefetched entry once done: dropped after this
	requested  bool      // a request has held it
	kept       bool      // verified, unheld, kept for the next request until expires
	gone       bool      // removed from the table
	abandoned  bool      // its fetch was cancelled: nobody wanted it any more
	closed     bool      // file closed, budget released
}

// spools is the table of spooled NARs by request path, and the prefetch
// queue feeding it.
type spools struct {
	s       *Server
	mu      sync.Mutex
	entries map[string]*spoolEntry
	// pending prefetches, by request path, waiting for a free slot, and
	// their store path basenames.
	pending      map[string]*narRef
	pendingBases map[string]bool
	// prefetched entries (in flight or ready, not yet requested).
	ahead      int
	aheadBytes int64
	// kept entries, oldest first, and their total size.
	kept      []*spoolEntry
	keptBytes int64
}

func newSpools(s *Server) *spools {
	return &spools{s: s, entries: map[string]*spoolEntry{}, pending: map[string]*narRef{}, pendingBases: map[string]bool{}}
}

// acquire returns the entry for ref, starting its fetch if there is none,
// and holds it for one request until release. ok is false when the spool
// budget has no room for it.
func (p *spools) acquire(ref *narRef, c cid.Cid) (e *spoolEntry, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked()
	p.unqueueLocked(ref.key)
	if e := p.entries[ref.key]; e != nil && sameNar(e.ref, ref) && !e.abandoned {
		if e.kept {
			p.unkeepLocked(e)
			p.s.m.keptHits.Inc()
		}
		if e.prefetched {
			e.prefetched = false
			p.ahead--
			p.aheadBytes -= int64(e.ref.narSize)
			p.s.m.prefetches.WithLabelValues("used").Inc()
			p.scheduleLocked()
		}
		e.users++
		e.requested = true
		return e, true
	}
	e = p.startLocked(ref, c)
	if e == nil {
		return nil, false
	}
	e.users = 1
	e.requested = true
	return e, true
}

// release gives back one request's hold on e.
func (p *spools) release(e *spoolEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.users--
	p.maybeDropLocked(e)
	p.scheduleLocked()
}

// startLocked begins fetching ref into a new entry, or returns nil when the
// spool budget has no room. A previous entry for the same path (of another
// narinfo) is forgotten; its holders keep their file.
func (p *spools) startLocked(ref *narRef, c cid.Cid) *spoolEntry {
	for !p.s.spool.acquire(int64(ref.narSize)) {
		// NARs kept for a next request give way to one requested now.
		if len(p.kept) == 0 {
			return nil
		}
		p.dropKeptLocked(p.kept[0])
	}
	if old := p.entries[ref.key]; old != nil {
		if old.kept {
			p.dropKeptLocked(old)
		} else {
			p.removeLocked(old)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	how, _ := p.s.trust(c, ref)
	e := &spoolEntry{key: ref.key, ref: ref, c: c, trust: how, progress: newReadProgress(), done: make(chan struct{}), cancel: cancel}
	p.entries[ref.key] = e
	go func() {
		start := time.Now()
		f, err := p.s.fetchIPFS(ctx, e)
		p.mu.Lock()
		e.f, e.err, e.took = f, err, time.Since(start)
		if e.prefetched {
			e.expires = p.s.now().Add(p.s.opts.PrefetchTTL)
			time.AfterFunc(p.s.opts.PrefetchTTL+time.Second, func() {
				p.mu.Lock()
				defer p.mu.Unlock()
				p.sweepLocked()
				p.scheduleLocked()
			})
		}
		close(e.done)
		p.maybeDropLocked(e)
		p.scheduleLocked()
		p.mu.Unlock()
		switch {
		case err == nil:
			p.s.proved(c, ref)
		case e.trust != "" && holdsOtherBytes(err):
			// Trusted, and found holding other bytes: read and
			// checked first from now on.
			p.s.distrust(c, ref)
		}
	}()
	return e
}

// isDone reports whether e's read has ended.
func (e *spoolEntry) isDone() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// maybeDropLocked closes e once nobody needs it: no request holds it, and
// it is not a prefetch waiting for its request (or that wait has expired).
func (p *spools) maybeDropLocked(e *spoolEntry) {
	if e.closed || e.users > 0 {
		return
	}
	if e.prefetched && !p.expiredLocked(e) {
		return
	}
	if e.kept && !p.expiredLocked(e) {
		return
	}
	if !e.kept && !e.prefetched && !e.gone && p.keepLocked(e) {
		return
	}
	select {
	case <-e.done:
	default:
		if e.prefetched {
			return // still fetching ahead of its request
		}
		// Every request for it went away: the fetch is no longer wanted.
		e.abandoned = true
		e.cancel()
		// Its goroutine calls back here once done, to close the file.
		return
	}
	p.removeLocked(e)
	if e.kept {
		p.unkeepLocked(e)
	}
	if e.f != nil {
		e.f.Close()
		e.f = nil
	}
	p.s.spool.release(int64(e.ref.narSize))
	e.cancel()
	e.closed = true
}

func (p *spools) expiredLocked(e *spoolEntry) bool {
	return !e.expires.IsZero() && !p.s.now().Before(e.expires)
}

func (p *spools) removeLocked(e *spoolEntry) {
	if e.gone {
		return
	}
	e.gone = true
	if p.entries[e.key] == e {
		delete(p.entries, e.key)
	}
	if e.prefetched {
		e.prefetched = false
		p.ahead--
		p.aheadBytes -= int64(e.ref.narSize)
	}
}

// keepLocked keeps e, verified and no longer held, for the next request
// for it, within KeepBytes (one NAR is always kept, as one is always read
// ahead) and for KeepTTL, and reports whether it did.
// Its file was checked against the narinfo when it was written, and only
// this process has it open (it is unlinked), so sending it again sends
// the same proved bytes.
func (p *spools) keepLocked(e *spoolEntry) bool {
	size := int64(e.ref.narSize)
	if p.s.opts.KeepBytes <= 0 || e.abandoned || !e.requested {
		return false
	}
	select {
	case <-e.done:
	default:
		return false
	}
	if e.err != nil || e.f == nil {
		return false
	}
	for p.keptBytes+size > p.s.opts.KeepBytes && len(p.kept) > 0 {
		p.dropKeptLocked(p.kept[0])
	}
	e.kept = true
	e.expires = p.s.now().Add(p.s.opts.KeepTTL)
	p.kept = append(p.kept, e)
	p.keptBytes += size
	time.AfterFunc(p.s.opts.KeepTTL+time.Second, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.sweepLocked()
	})
	return true
}

// unkeepLocked takes e out of the kept list (it is requested again, or
// dropped).
func (p *spools) unkeepLocked(e *spoolEntry) {
	if i := slices.Index(p.kept, e); i >= 0 {
		p.kept = slices.Delete(p.kept, i, i+1)
	}
	p.keptBytes -= int64(e.ref.narSize)
	e.kept = false
	e.expires = time.Time{}
}

// dropKeptLocked closes a kept entry before its time: room is needed.
func (p *spools) dropKeptLocked(e *spoolEntry) {
	e.expires = p.s.now().Add(-time.Nanosecond)
	p.maybeDropLocked(e)
}

// dropKept closes every kept NAR's file.
func (p *spools) dropKept() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.kept) > 0 {
		p.dropKeptLocked(p.kept[0])
	}
}

// sweepLocked drops prefetched NARs nobody asked for in PrefetchTTL, and
// kept NARs not asked for again in KeepTTL.
func (p *spools) sweepLocked() {
	for _, e := range slices.Clone(p.kept) {
		if p.expiredLocked(e) {
			p.maybeDropLocked(e)
		}
	}
	for _, e := range p.entries {
		if e.prefetched && e.users == 0 && p.expiredLocked(e) {
			p.s.log.Debug("prefetched NAR not requested in time; dropped", zap.String("url", e.key), zap.String("cid", e.c.String()))
			e.prefetched = false
			p.ahead--
			p.aheadBytes -= int64(e.ref.narSize)
			p.s.m.prefetches.WithLabelValues("unrequested").Inc()
			p.maybeDropLocked(e)
		}
	}
}

// prefetch queues ref, whose narinfo was just served: Nix asks for the
// narinfos of a whole closure before the first NAR, so the NARs can be read
// and checked while it does.
func (p *spools) prefetch(ref *narRef) {
	if p.s.opts.PrefetchAhead <= 0 || ref == nil || ref.compression != "none" || ref.ipfsHash == "" {
		return
	}
	if _, err := cid.Decode(ref.ipfsHash); err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked()
	if e := p.entries[ref.key]; e != nil && sameNar(e.ref, ref) {
		return
	}
	if len(p.pending) >= maxPendingPrefetch {
		return
	}
	p.pending[ref.key] = ref
	p.pendingBases[ref.base] = true
	p.scheduleLocked()
}

// maxPendingPrefetch bounds the prefetch queue (a closure's narinfos).
const maxPendingPrefetch = 4096

func (p *spools) unqueueLocked(key string) {
	if ref := p.pending[key]; ref != nil {
		delete(p.pending, key)
		delete(p.pendingBases, ref.base)
	}
}

// scheduleLocked starts pending prefetches while there is room: at most
// PrefetchAhead NARs fetched ahead of their request, and at most
// PrefetchMaxBytes of them unless none is ahead.
func (p *spools) scheduleLocked() {
	for p.ahead < p.s.opts.PrefetchAhead && len(p.pending) > 0 {
		ref := p.nextLocked()
		size := int64(ref.narSize)
		if p.ahead > 0 && p.aheadBytes+size > p.s.opts.PrefetchMaxBytes {
			return
		}
		p.unqueueLocked(ref.key)
		c, err := cid.Decode(ref.ipfsHash)
		if err != nil {
			continue
		}
		e := p.startLocked(ref, c)
		if e == nil {
			return // spool budget full: requests on demand get upstream's NAR
		}
		e.prefetched = true
		p.ahead++
		p.aheadBytes += size
	}
}

// nextLocked picks the pending NAR Nix most likely asks for first. Nix
// (copyPaths, substitution goals) fetches a path only after its
// references, and among paths that are ready, in store path order; so:
// the first in store path order of those whose references are not pending
// themselves.
func (p *spools) nextLocked() *narRef {
	var best, bestAny *narRef
	for _, ref := range p.pending {
		if bestAny == nil || ref.storePath < bestAny.storePath {
			bestAny = ref
		}
		if best != nil && ref.storePath >= best.storePath {
			continue
		}
		if !slices.ContainsFunc(ref.references, func(r string) bool {
			return r != ref.base && p.pendingBases[r]
		}) {
			best = ref
		}
	}
	if best == nil {
		return bestAny
	}
	return best
}

func sameNar(a, b *narRef) bool {
	return a.ipfsHash == b.ipfsHash && a.narSize == b.narSize && string(a.narHash) == string(b.narHash)
}

// verifiedKey names a CID already proved to hold a NAR: the CID with the
// NarHash and NarSize it matched.
func verifiedKey(c cid.Cid, ref *narRef) string {
	return fmt.Sprintf("%s %x %d", c.KeyString(), ref.narHash, ref.narSize)
}
