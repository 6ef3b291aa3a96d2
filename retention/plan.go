package retention

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/nix-ipfs/nix-ipfs/retention/packed"
	"github.com/nix-ipfs/nix-ipfs/retention/roots"
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

	// rootJob and rootBuilt, when Reason is empty, are the root whose
	// lapse retires the path, under policy: Why formats the reason from
	// them.
	rootJob   string
	rootBuilt time.Time
	policy    *Policy
}

// Why is why the path leaves (Reason, or the reason its root lapsed).
func (r Retirement) Why() string {
	if r.Reason != "" || r.policy == nil {
		return r.Reason
	}
	return fmt.Sprintf("root of job %s last built %s: not built within --keep-for %s, not among the last %d of its job, not pinned",
		r.rootJob, r.rootBuilt.UTC().Format(time.RFC3339), r.policy.KeepFor, r.policy.KeepLastPerJob)
}

func unrootedReason(pol *Policy) string {
	return fmt.Sprintf("in the closure of no live root, not written within --grace %s", pol.Grace)
}

// MarshalJSON writes the retirement with its reason.
func (r Retirement) MarshalJSON() ([]byte, error) {
	type plain Retirement
	p := plain(r)
	p.Reason = r.Why()
	return json.Marshal(p)
}

// Plan is what a prune would do, and why.
type Plan struct {
	Policy    Policy    `json:"-"`
	Now       time.Time `json:"now"`
	Roots     int       `json:"roots"`
	LiveRoots LiveRoots `json:"live_roots"`
	Pins      []Pin     `json:"pins"`
	// Cache is what the cache holds now.
	CachePaths int   `json:"cache_paths"`
	CacheBytes int64 `json:"cache_bytes"`
	KeptPaths  int   `json:"kept_paths"`
	// GracePaths are kept only because they are recent (Policy.Grace).
	GracePaths int `json:"grace_paths"`
	// Retire are the paths that leave, by store path.
	Retire Retirements `json:"retire"`
	// RetireCount is how many paths leave (Retire.Len() but for Survey).
	RetireCount int `json:"-"`
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
// leaves. Its sets are indexed by the index's ids, a byte a path; its
// retirements are a few bytes a path, made whole when read.
func Decide(ix *Index, roots *Roots, pins []Pin, pol Policy, now time.Time) *Plan {
	return decide(ix, roots, pins, pol, now, true)
}

// Survey is Decide without the retirements themselves (Retire stays
// empty, RetireCount says how many): what status needs.
func Survey(ix *Index, roots *Roots, pins []Pin, pol Policy, now time.Time) *Plan {
	return decide(ix, roots, pins, pol, now, false)
}

func decide(ix *Index, rs *Roots, pins []Pin, pol Policy, now time.Time, listRetire bool) *Plan {
	p := &Plan{Policy: pol, Now: now, Roots: rs.Len(), Pins: pins, shadowed: ix.Shadowed, journalNARs: ix.journalNARs}
	p.Problems = append(p.Problems, ix.Unreadable...)
	present := ix.hasStorePath
	for i := range ix.entries {
		if e := &ix.entries[i]; e.present() && !e.retiring() {
			p.CachePaths++
		}
	}
	p.CacheBytes = ix.NarInfoBytes
	for _, nf := range ix.nars {
		p.CacheBytes += nf.size
	}

	// Live roots.
	live := &liveSet{LiveRoots: LiveRoots{rs: rs, pol: &p.Policy}}
	// idOf is the index's id of a root's output, -1 if none; present
	// says whether the cache holds it.
	sameIndex := rs.Paths() == roots.Paths(ix)
	idOf := func(o string, pathID int32) (id int32, present bool) {
		if pathID >= 0 {
			if sameIndex {
				return pathID, true // known by its store path
			}
			o = rs.Paths().PathText(pathID)
		}
		return ix.id(storepath.HashPart(o)), ix.hasStorePath(o)
	}
	perJob := map[string]int{}
	newest := rs.Newest()
	for _, id := range newest {
		inCache := false
		rs.EachOutput(id, func(o string, pathID int32) bool {
			_, inCache = idOf(o, pathID)
			return !inCache
		})
		var why uint8
		if pol.KeepFor > 0 && now.Sub(rs.LastBuilt(id)) < pol.KeepFor {
			why |= liveByKeepFor
		}
		// Only roots that reached the cache count towards a job's last N:
		// one still being published must not push a published one out.
		if inCache && pol.KeepLastPerJob > 0 {
			if job := rs.Job(id); perJob[job] < pol.KeepLastPerJob {
				perJob[job]++
				why |= liveByLastN
			}
		}
		if why != 0 {
			live.markSet(id, why)
		}
	}
	for _, pin := range pins {
		for _, sp := range pin.Live() {
			if !present(sp) {
				p.Problems = append(p.Problems, fmt.Sprintf("pin %s: revision %s is not in the cache", pin.Name, sp))
			}
			live.mark(Root{Outputs: []string{sp}, Job: "pin:" + pin.Name}, "pin "+pin.Name)
		}
	}
	for _, job := range slices.Sorted(maps.Keys(ix.Latest)) {
		live.mark(Root{Outputs: ix.Latest[job], Job: job}, "latest build of job "+job)
	}
	p.LiveRoots = live.LiveRoots
	live = nil

	// The kept set: closures of the live roots and of recent paths.
	kept := make([]bool, len(ix.entries))
	missing := map[[2]int32]bool{}
	var stack []int32
	push := func(id int32) {
		if !kept[id] {
			kept[id] = true
			stack = append(stack, id)
		}
	}
	for _, ref := range p.LiveRoots.order {
		if ref.root >= 0 {
			rs.EachOutput(ref.root, func(o string, pathID int32) bool {
				if id, ok := idOf(o, pathID); ok {
					push(id)
				}
				return true
			})
			continue
		}
		for _, o := range p.LiveRoots.whole[-ref.root-1].Outputs {
			if present(o) {
				push(ix.id(storepath.HashPart(o)))
			}
		}
	}
	graceSeeds := 0
	if pol.Grace > 0 {
		cut := now.Add(-pol.Grace).UnixNano()
		for i := range ix.entries {
			e := &ix.entries[i]
			if !e.present() || e.retiring() {
				continue
			}
			if e.modTime > cut || (e.nar >= 0 && ix.nars[e.nar].modTime > cut) || (len(ix.RecentlyPublished) > 0 && ix.RecentlyPublished[ix.storePath(int32(i))]) {
				if !kept[i] {
					graceSeeds++
				}
				push(int32(i))
			}
		}
	}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		e := &ix.entries[h]
		for _, r := range ix.refsOf(e) {
			if !ix.entries[r].present() {
				if k := [2]int32{h, r}; !missing[k] {
					missing[k] = true
					p.Problems = append(p.Problems, fmt.Sprintf("%s references %s, which is not in the cache (left as it is: prune never repairs)",
						ix.storePath(h), ix.hash(r)))
				}
				continue
			}
			push(r)
		}
	}
	p.GracePaths = graceSeeds

	// What leaves, and what stays. A NAR file is kept, named or removed
	// by its index in ix.nars; a CID is kept by its packed form.
	keptNAR := make([]bool, len(ix.nars))
	named := make([]bool, len(ix.nars))
	keptCID := map[string]struct{}{}
	for i := range ix.entries {
		e := &ix.entries[i]
		if !e.present() {
			continue
		}
		if e.nar >= 0 {
			named[e.nar] = true
		}
		if kept[i] {
			if e.retiring() {
				if e.nar < 0 {
					p.Problems = append(p.Problems, fmt.Sprintf("%s is kept but an interrupted prune removed its NAR %s", ix.storePath(int32(i)), ix.url(int32(i))))
					continue
				}
				p.restore = append(p.restore, ix.hashPart(int32(i)))
			}
			p.KeptPaths++
			if e.nar >= 0 {
				keptNAR[e.nar] = true
			}
			if c := ix.arena.Get(e.cid); c != "" {
				keptCID[c] = struct{}{}
			}
			if e.nar < 0 {
				p.Problems = append(p.Problems, fmt.Sprintf("%s: its NAR %s is missing from the cache", ix.storePath(int32(i)), ix.url(int32(i))))
			}
		}
	}
	// rootOf is the newest root each path is an output of (-1: none).
	rootOf := make([]RootID, len(ix.entries))
	for i := range rootOf {
		rootOf[i] = -1
	}
	for _, r := range newest {
		rs.EachOutput(r, func(o string, pathID int32) bool {
			if id, _ := idOf(o, pathID); id >= 0 && rootOf[id] < 0 {
				rootOf[id] = r
			}
			return true
		})
	}
	newest = nil
	nRetire := 0
	for i := range ix.entries {
		if ix.entries[i].present() && !kept[i] {
			nRetire++
		}
	}
	p.RetireCount = nRetire
	var list []retireRef
	if nRetire > 0 && listRetire {
		list = make([]retireRef, 0, nRetire)
	}
	removed := make([]bool, len(ix.nars))
	for i := range ix.entries {
		e := &ix.entries[i]
		if !e.present() || kept[i] {
			continue
		}
		r := retireRef{id: int32(i), root: rootOf[i]}
		if _, ok := keptCID[ix.arena.Get(e.cid)]; ok {
			r.flags |= cidKept
		}
		if e.nar >= 0 && !keptNAR[e.nar] {
			r.flags |= removeNAR
			if !removed[e.nar] {
				removed[e.nar] = true
				p.FreedBytes += ix.nars[e.nar].size
			}
		}
		if !e.retiring() {
			p.FreedBytes += int64(e.infoSize)
		}
		if listRetire {
			list = append(list, r)
		}
	}
	slices.SortFunc(list, func(a, b retireRef) int { return ix.ComparePaths(a.id, b.id) })
	p.Retire = Retirements{ix: ix, roots: rs, policy: &p.Policy, list: list}

	orphanCut := now.Add(-max(pol.Grace, OrphanAge)).UnixNano()
	for i, nf := range ix.nars {
		if !named[i] && nf.modTime < orphanCut {
			p.OrphanNARs = append(p.OrphanNARs, packed.NarURLText(ix.arena.Get(nf.url)))
			p.FreedBytes += nf.size
		}
	}
	sort.Strings(p.OrphanNARs)
	sort.Strings(p.Problems)
	return p
}
