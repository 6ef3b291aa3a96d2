// Package replication says which mirrors hold a store path, and whether a
// closure is safe: a path is replicated once K mirror nodes have confirmed
// its pin with a "pinned" event, a closure once every path in it is. It
// reads the stream only (published, pinned, retired and built events) and
// folds them into a State; a Tracker keeps that State current by reading
// only what is new. `nix-ipfs wait` and `nix-ipfs status --closure` are
// built on it, and so is the status page's view of mirrors and builds.
package replication

import (
	"path"
	"sort"
	"strconv"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
)

// Holder is a mirror that confirmed a pin.
type Holder struct {
	Mirror string    `json:"mirror"`
	Node   string    `json:"node,omitempty"`
	Time   time.Time `json:"time"`
}

// key is what makes two holders one: a node holds one copy, whatever
// mirror names it pins under (as nix-ipfs gc counts them). A pin without a
// node id counts by its mirror name.
func (h Holder) key() string {
	if h.Node != "" {
		return "node:" + h.Node
	}
	return "mirror:" + h.Mirror
}

// entry is what the stream says about one store path.
type entry struct {
	cid        string
	narSize    int64
	references []string // absolute store paths, itself excluded
	published  time.Time
	retired    bool
}

// mirrorState is what the stream says about one mirror.
type mirrorState struct {
	lastPin time.Time
	pins    int
}

// Build is one build event, newest last in State.builds.
type Build struct {
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	Job        string    `json:"job,omitempty"`
	HydraBuild int64     `json:"hydra_build,omitempty"`
	OutPaths   []string  `json:"out_paths"`
}

// State is the replication state the events so far describe. The zero
// value is not usable: use NewState.
type State struct {
	paths   map[string]*entry
	pins    map[string]map[string]Holder // CID -> holder key -> holder
	mirrors map[string]*mirrorState
	builds  []Build
	// keepBuilds is how many of the latest builds are kept.
	keepBuilds int
}

// DefaultKeepBuilds is how many of the latest builds a State remembers.
const DefaultKeepBuilds = 20

// NewState returns an empty State.
func NewState() *State {
	return &State{paths: map[string]*entry{}, pins: map[string]map[string]Holder{}, mirrors: map[string]*mirrorState{},
		keepBuilds: DefaultKeepBuilds}
}

// Apply folds one event into the state. Events of other types are
// ignored. Apply is safe to call twice with the same event.
func (s *State) Apply(e events.Event) {
	switch e := e.(type) {
	case *events.Published:
		refs := make([]string, 0, len(e.References))
		self := path.Base(e.StorePath)
		for _, r := range e.References {
			if r != self {
				refs = append(refs, path.Join(e.StoreDir, r))
			}
		}
		s.paths[e.StorePath] = &entry{cid: e.CID, narSize: e.NarSize, references: refs, published: e.Time}
	case *events.Pinned:
		h := Holder{Mirror: e.Mirror, Node: e.Node.PeerID, Time: e.Time}
		m := s.pins[e.CID]
		if m == nil {
			m = map[string]Holder{}
			s.pins[e.CID] = m
		}
		if old, ok := m[h.key()]; !ok || h.Time.After(old.Time) {
			m[h.key()] = h
		}
		ms := s.mirrors[e.Mirror]
		if ms == nil {
			ms = &mirrorState{}
			s.mirrors[e.Mirror] = ms
		}
		ms.pins++
		if e.Time.After(ms.lastPin) {
			ms.lastPin = e.Time
		}
	case *events.Retired:
		if p := s.paths[e.StorePath]; p != nil {
			p.retired = true
			// Mirrors unpin what was retired: the earlier pins no longer
			// count. A path published again is pinned, and confirmed, anew.
			delete(s.pins, p.cid)
		}
		if e.CID != "" {
			delete(s.pins, e.CID)
		}
	case *events.Built:
		s.builds = append(s.builds, Build{Time: e.Time, Host: e.Host, Job: e.Job, HydraBuild: e.HydraBuild, OutPaths: e.OutPaths})
		if n := len(s.builds) - s.keepBuilds; n > 0 {
			s.builds = append(s.builds[:0:0], s.builds[n:]...)
		}
	}
}

// Holders returns the mirrors that hold storePath's current CID, by
// mirror name; nil when it is not published or was retired.
func (s *State) Holders(storePath string) []Holder {
	p := s.paths[storePath]
	if p == nil || p.retired {
		return nil
	}
	out := make([]Holder, 0, len(s.pins[p.cid]))
	for _, h := range s.pins[p.cid] {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Mirror != out[j].Mirror {
			return out[i].Mirror < out[j].Mirror
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// PathReport is one path of a closure and who holds it.
type PathReport struct {
	StorePath string `json:"store_path"`
	CID       string `json:"cid,omitempty"`
	// Published is false for a path no published event names (not yet,
	// or never: a reference the publisher has not reached).
	Published bool     `json:"published"`
	Retired   bool     `json:"retired,omitempty"`
	Mirrors   []Holder `json:"mirrors"`
	// Replicated: published, not retired, and held by at least K nodes.
	Replicated bool `json:"replicated"`
}

// Why says, for a path that is not replicated, what it lacks.
func (p PathReport) Why(k int) string {
	switch {
	case p.Replicated:
		return ""
	case !p.Published:
		return "not published"
	case p.Retired:
		return "retired"
	}
	return plural(len(p.Mirrors), "mirror") + " of " + strconv.Itoa(k)
}

// Closure is a closure's replication.
type Closure struct {
	// Roots are the store paths asked about.
	Roots []string `json:"roots"`
	// K is the number of mirror nodes each path needs.
	K     int          `json:"mirrors_wanted"`
	Paths []PathReport `json:"paths"`
	// Replicated: every path is.
	Replicated bool `json:"replicated"`
}

// Missing returns the paths that are not replicated.
func (c *Closure) Missing() []PathReport {
	var out []PathReport
	for _, p := range c.Paths {
		if !p.Replicated {
			out = append(out, p)
		}
	}
	return out
}

// Check returns the replication of the closure of roots (over the
// references their published events name) with k mirror nodes wanted.
// A path the walk reaches that no published event names is in the
// closure, not published: the closure is not replicated until it is.
func (s *State) Check(roots []string, k int) *Closure {
	c := &Closure{Roots: roots, K: k, Replicated: true}
	for _, sp := range s.closure(roots) {
		p := s.paths[sp]
		r := PathReport{StorePath: sp, Mirrors: []Holder{}}
		if p != nil {
			r.CID, r.Published, r.Retired = p.cid, true, p.retired
			if hs := s.Holders(sp); hs != nil {
				r.Mirrors = hs
			}
		}
		r.Replicated = r.Published && !r.Retired && len(r.Mirrors) >= k
		c.Replicated = c.Replicated && r.Replicated
		c.Paths = append(c.Paths, r)
	}
	return c
}

// closure walks the references from roots, sorted.
func (s *State) closure(roots []string) []string {
	seen := map[string]bool{}
	todo := append([]string(nil), roots...)
	for len(todo) > 0 {
		sp := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[sp] {
			continue
		}
		seen[sp] = true
		if p := s.paths[sp]; p != nil {
			todo = append(todo, p.references...)
		}
	}
	out := make([]string, 0, len(seen))
	for sp := range seen {
		out = append(out, sp)
	}
	sort.Strings(out)
	return out
}

// ClosureHolders returns the mirrors that hold every path of roots'
// closure (by mirror name, sorted), and whether the whole closure is
// published.
func (s *State) ClosureHolders(roots []string) (mirrors []string, published bool) {
	c := s.Check(roots, 0)
	count := map[string]int{}
	published = true
	for _, p := range c.Paths {
		if !p.Published || p.Retired {
			published = false
		}
		names := map[string]bool{}
		for _, h := range p.Mirrors {
			names[h.Mirror] = true
		}
		for n := range names {
			count[n]++
		}
	}
	for n, k := range count {
		if k == len(c.Paths) && published {
			mirrors = append(mirrors, n)
		}
	}
	sort.Strings(mirrors)
	return mirrors, published
}

// Live is the set of paths published and not retired.
type Live struct {
	Paths int   `json:"paths"`
	Bytes int64 `json:"nar_bytes"`
}

// Live returns the live set's size.
func (s *State) Live() Live {
	var l Live
	for _, p := range s.paths {
		if !p.retired {
			l.Paths++
			l.Bytes += p.narSize
		}
	}
	return l
}

// MirrorShare is one mirror's share of the live set.
type MirrorShare struct {
	Name string `json:"name"`
	// Holds is how many live paths it confirmed, of Live.
	Holds int `json:"holds"`
	Live  int `json:"live"`
	// Share is Holds/Live (0 with nothing live).
	Share float64 `json:"share"`
	// Pins is how many pinned events it sent; LastPin is the newest.
	Pins    int       `json:"pins"`
	LastPin time.Time `json:"last_pin"`
}

// Mirrors returns each mirror's share of the live set, by name.
func (s *State) Mirrors() []MirrorShare {
	held := map[string]int{}
	live := 0
	for _, p := range s.paths {
		if p.retired {
			continue
		}
		live++
		names := map[string]bool{}
		for _, h := range s.pins[p.cid] {
			names[h.Mirror] = true
		}
		for n := range names {
			held[n]++
		}
	}
	out := make([]MirrorShare, 0, len(s.mirrors))
	for name, m := range s.mirrors {
		ms := MirrorShare{Name: name, Holds: held[name], Live: live, Pins: m.pins, LastPin: m.lastPin}
		if live > 0 {
			ms.Share = float64(ms.Holds) / float64(live)
		}
		out = append(out, ms)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// BuildReport is a build and the mirrors that hold its whole closure.
type BuildReport struct {
	Build
	// Published: every path of the closure is published (and live).
	Published bool `json:"published"`
	// Mirrors hold every path of the closure.
	Mirrors []string `json:"mirrors"`
}

// LatestBuilds returns up to n of the latest builds, newest first.
func (s *State) LatestBuilds(n int) []BuildReport {
	out := []BuildReport{}
	for i := len(s.builds) - 1; i >= 0 && len(out) < n; i-- {
		b := s.builds[i]
		mirrors, published := s.ClosureHolders(b.OutPaths)
		if mirrors == nil {
			mirrors = []string{}
		}
		out = append(out, BuildReport{Build: b, Published: published, Mirrors: mirrors})
	}
	return out
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
