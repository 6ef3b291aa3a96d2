package spool

import "slices"

// maxPending bounds the read-ahead queue (a closure's narinfos).
const maxPending = 4096

// Prefetch queues n, whose narinfo was just served, to be read ahead of
// its request: Nix asks for the narinfos of a whole closure before the
// first NAR, so the NARs can be read and checked while it does.
func (p *Spool[R]) Prefetch(n NAR, ref R) {
	if p.o.PrefetchAhead <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return
	}
	p.sweepLocked()
	if e := p.entries[n.Key]; e != nil && same(e.NAR, n) {
		return
	}
	if len(p.pending) >= maxPending {
		return
	}
	p.pending[n.Key] = pendingNAR[R]{n, ref}
	p.pendingBases[n.Base] = true
	p.scheduleLocked()
}

func (p *Spool[R]) unqueueLocked(key string) {
	if q, ok := p.pending[key]; ok {
		delete(p.pending, key)
		delete(p.pendingBases, q.nar.Base)
	}
}

// scheduleLocked starts pending read-aheads while there is room: at most
// PrefetchAhead NARs read ahead of their request, and at most
// PrefetchMaxBytes of them unless none is ahead.
func (p *Spool[R]) scheduleLocked() {
	for p.ahead < p.o.PrefetchAhead && len(p.pending) > 0 {
		q := p.nextLocked()
		if p.ahead > 0 && p.aheadBytes+int64(q.nar.NarSize) > p.o.PrefetchMaxBytes {
			return
		}
		p.unqueueLocked(q.nar.Key)
		if p.startLocked(q.nar, q.ref, ahead) == nil {
			return // MaxBytes full: requests on demand get upstream's NAR
		}
	}
}

// nextLocked picks the pending NAR Nix most likely asks for first. Nix
// (copyPaths, substitution goals) fetches a path only after its
// references, and among paths that are ready, in store path order; so:
// the first in store path order of those whose references are not pending
// themselves.
func (p *Spool[R]) nextLocked() pendingNAR[R] {
	var best, bestAny *pendingNAR[R]
	for _, q := range p.pending {
		if bestAny == nil || q.nar.StorePath < bestAny.nar.StorePath {
			bestAny = &q
		}
		if best != nil && q.nar.StorePath >= best.nar.StorePath {
			continue
		}
		if !slices.ContainsFunc(q.nar.References, func(r string) bool {
			return r != q.nar.Base && p.pendingBases[r]
		}) {
			best = &q
		}
	}
	if best == nil {
		return *bestAny
	}
	return *best
}
