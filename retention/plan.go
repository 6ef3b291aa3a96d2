package retention

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Policy says which roots are live.
type Policy struct {
	// KeepFor keeps every root built within this long.
	KeepFor time.Duration
	// KeepLastPerJob keeps the last N roots of each job (0: none by job).
	KeepLastPerJob int
	// Grace keeps every path whose narinfo or NAR was written (or, for
	// the publisher, found present again), or whose "published" event was
	// stored, within this long, with its closure: what is being published
	// right now. Prune checks it again at each removal (the grace
	// handshake, package cachedir).
	Grace time.Duration
}

// OrphanAge is the least age of a NAR that no narinfo names before prune
// removes it (a publisher writes the NAR before the narinfo).
const OrphanAge = time.Hour

// LiveRoot is a root the policy keeps, and why.
type LiveRoot struct {
	Root
	Why []string `json:"why"`
}

// Retirement is one path prune removes.
type Retirement struct {
	StorePath string `json:"store_path"`
	HashPart  string `json:"-"`
	URL       string `json:"url"`
	NarHash   string `json:"nar_hash"`
	NarSize   uint64 `json:"nar_size"`
	FileSize  uint64 `json:"file_size"`
	// CID is the one to unpin and announce; empty when none, or when a
	// kept path shares the NAR.
	CID string `json:"cid,omitempty"`
	// RemoveNAR is false when a kept path shares the NAR file.
	RemoveNAR bool   `json:"remove_nar"`
	Reason    string `json:"reason"`
	// Journal is true for a path an interrupted prune already moved out
	// of the cache: this prune finishes its retirement.
	Journal  bool  `json:"journal,omitempty"`
	InfoSize int64 `json:"-"`
}

// Plan is what a prune would do, and why.
type Plan struct {
	Policy    Policy     `json:"-"`
	Now       time.Time  `json:"now"`
	Roots     int        `json:"roots"`
	LiveRoots []LiveRoot `json:"live_roots"`
	Pins      []Pin      `json:"pins"`
	// Cache is what the cache holds now.
	CachePaths int   `json:"cache_paths"`
	CacheBytes int64 `json:"cache_bytes"`
	KeptPaths  int   `json:"kept_paths"`
	// GracePaths are kept only because they are recent (Policy.Grace).
	GracePaths int          `json:"grace_paths"`
	Retire     []Retirement `json:"retire"`
	// OrphanNARs are NAR files no narinfo names, older than OrphanAge.
	OrphanNARs []string `json:"orphan_nars,omitempty"`
	// FreedBytes is what the cache directory shrinks by: NARs removed
	// (retired and orphaned) and narinfos.
	FreedBytes int64 `json:"freed_bytes"`
	// Problems are things found wrong that prune does not touch: a
	// narinfo naming a reference the cache lacks, a narinfo without its
	// NAR, one that does not parse, a pin of a path not in the cache.
	Problems []string `json:"problems,omitempty"`

	// restore are journal entries kept after all: moved back into the
	// cache. shadowed are journal entries whose path is in the cache again.
	restore     []string
	shadowed    []string
	journalNARs []string
}

// Decide computes the plan: the live roots, the kept set (their closures
// and whatever Grace protects, over the narinfos' References), and what
// leaves.
func Decide(ix *Index, roots *Roots, pins []Pin, pol Policy, now time.Time) *Plan {
	p := &Plan{Policy: pol, Now: now, Roots: roots.Len(), Pins: pins, shadowed: ix.Shadowed, journalNARs: ix.journalNARs}
	p.Problems = append(p.Problems, ix.Unreadable...)
	present := func(sp string) bool {
		e := ix.Entries[storepath.HashPart(sp)]
		return e != nil && e.StorePath == sp
	}
	for _, e := range ix.Entries {
		if !e.Retiring {
			p.CachePaths++
		}
	}
	p.CacheBytes = ix.NarInfoBytes
	for _, nf := range ix.NARs {
		p.CacheBytes += nf.Size
	}

	// Live roots.
	live := map[string]*LiveRoot{}
	var liveOrder []string
	mark := func(r Root, why string) {
		k := r.key()
		if lr, ok := live[k]; ok {
			lr.Why = append(lr.Why, why)
			return
		}
		live[k] = &LiveRoot{Root: r, Why: []string{why}}
		liveOrder = append(liveOrder, k)
	}
	perJob := map[string]int{}
	allRoots := roots.All() // newest first
	for _, r := range allRoots {
		inCache := false
		for _, o := range r.Outputs {
			if present(o) {
				inCache = true
				break
			}
		}
		if pol.KeepFor > 0 && now.Sub(r.LastBuilt) < pol.KeepFor {
			mark(r, "built within --keep-for "+pol.KeepFor.String())
		}
		// Only roots that reached the cache count towards a job's last N:
		// one still being published must not push a published one out.
		if inCache && pol.KeepLastPerJob > 0 && perJob[r.Job] < pol.KeepLastPerJob {
			perJob[r.Job]++
			mark(r, fmt.Sprintf("among the last %d of job %s", pol.KeepLastPerJob, r.Job))
		}
	}
	for _, pin := range pins {
		for _, sp := range pin.Live() {
			if !present(sp) {
				p.Problems = append(p.Problems, fmt.Sprintf("pin %s: revision %s is not in the cache", pin.Name, sp))
			}
			mark(Root{Outputs: []string{sp}, Job: "pin:" + pin.Name}, "pin "+pin.Name)
		}
	}
	for _, job := range slices.Sorted(maps.Keys(ix.Latest)) {
		mark(Root{Outputs: ix.Latest[job], Job: job}, "latest build of job "+job)
	}
	for _, k := range liveOrder {
		p.LiveRoots = append(p.LiveRoots, *live[k])
	}

	// The kept set: closures of the live roots and of recent paths.
	kept := map[string]bool{}
	missing := map[string]bool{}
	var stack []string
	push := func(h string) {
		if !kept[h] {
			kept[h] = true
			stack = append(stack, h)
		}
	}
	for _, lr := range p.LiveRoots {
		for _, o := range lr.Outputs {
			if present(o) {
				push(storepath.HashPart(o))
			}
		}
	}
	graceSeeds := 0
	if pol.Grace > 0 {
		cut := now.Add(-pol.Grace)
		for h, e := range ix.Entries {
			if !e.Retiring && (e.ModTime.After(cut) || e.NarModTime.After(cut) || ix.RecentlyPublished[e.StorePath]) {
				if !kept[h] {
					graceSeeds++
				}
				push(h)
			}
		}
	}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		e := ix.Entries[h]
		for _, r := range e.Refs {
			if ix.Entries[r] == nil {
				if !missing[h+r] {
					missing[h+r] = true
					p.Problems = append(p.Problems, fmt.Sprintf("%s references %s, which is not in the cache (left as it is: prune never repairs)", e.StorePath, r))
				}
				continue
			}
			push(r)
		}
	}
	p.GracePaths = graceSeeds

	// What leaves, and what stays.
	keptURL := map[string]bool{}
	keptCID := map[string]bool{}
	named := map[string]bool{}
	for h, e := range ix.Entries {
		named[e.URL] = true
		if kept[h] {
			if e.Retiring {
				if e.NarMissing {
					p.Problems = append(p.Problems, fmt.Sprintf("%s is kept but an interrupted prune removed its NAR %s", e.StorePath, e.URL))
					continue
				}
				p.restore = append(p.restore, h)
			}
			p.KeptPaths++
			keptURL[e.URL] = true
			if e.CID != "" {
				keptCID[e.CID] = true
			}
			if e.NarMissing {
				p.Problems = append(p.Problems, fmt.Sprintf("%s: its NAR %s is missing from the cache", e.StorePath, e.URL))
			}
		}
	}
	rootOf := map[string]Root{}
	for _, r := range allRoots {
		for _, o := range r.Outputs {
			h := storepath.HashPart(o)
			if _, ok := rootOf[h]; !ok {
				rootOf[h] = r
			}
		}
	}
	removedURL := map[string]bool{}
	for h, e := range ix.Entries {
		if kept[h] {
			continue
		}
		r := Retirement{StorePath: e.StorePath, HashPart: h, URL: e.URL, NarHash: e.NarHash, NarSize: e.NarSize,
			FileSize: e.FileSize, Journal: e.Retiring, InfoSize: e.InfoSize}
		if !keptCID[e.CID] {
			r.CID = e.CID
		}
		r.RemoveNAR = !keptURL[e.URL] && !e.NarMissing
		if root, ok := rootOf[h]; ok {
			r.Reason = fmt.Sprintf("root of job %s last built %s: not built within --keep-for %s, not among the last %d of its job, not pinned",
				root.Job, root.LastBuilt.UTC().Format(time.RFC3339), pol.KeepFor, pol.KeepLastPerJob)
		} else {
			r.Reason = fmt.Sprintf("in the closure of no live root, not written within --grace %s", pol.Grace)
		}
		if r.RemoveNAR && !removedURL[e.URL] {
			removedURL[e.URL] = true
			p.FreedBytes += ix.NARs[e.URL].Size
		}
		if !e.Retiring {
			p.FreedBytes += e.InfoSize
		}
		p.Retire = append(p.Retire, r)
	}
	sort.Slice(p.Retire, func(i, j int) bool { return p.Retire[i].StorePath < p.Retire[j].StorePath })

	orphanCut := now.Add(-max(pol.Grace, OrphanAge))
	for url, nf := range ix.NARs {
		if !named[url] && nf.ModTime.Before(orphanCut) {
			p.OrphanNARs = append(p.OrphanNARs, url)
			p.FreedBytes += nf.Size
		}
	}
	sort.Strings(p.OrphanNARs)
	sort.Strings(p.Problems)
	return p
}
