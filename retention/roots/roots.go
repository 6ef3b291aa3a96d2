// Package roots holds the roots prune keeps closures by: the outputs of
// each build, its job and when it was last built, at about 100 bytes a
// root (issue 24: a farm builds every path it publishes, so a million
// paths are about a million roots), and the file a cache remembers them
// in, read and written a root at a time.
package roots

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/arena"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/latest"
)

// Root is the outputs of one build: it keeps their whole closure while it
// is live.
type Root struct {
	// Outputs are absolute store paths, sorted.
	Outputs []string `json:"outputs"`
	// Job is what keep-last-per-job counts by (latest.JobOf).
	Job string `json:"job"`
	// LastBuilt is the time of the latest "built" event for these outputs.
	LastBuilt time.Time `json:"last_built"`
}

// Key is the root's identity: its outputs, space-separated.
func (r Root) Key() string { return strings.Join(r.Outputs, " ") }

// ID names a root in its Set.
type ID int32

// Paths knows store paths by number: a retention index, whose paths a
// root's outputs usually are. A root whose outputs it all knows keeps 4
// bytes an output instead of their text.
type Paths interface {
	// PathID is store path sp's number, false if it has none.
	PathID(sp string) (int32, bool)
	// PathText is the store path numbered id.
	PathText(id int32) string
	// ComparePaths orders two numbers as their store paths.
	ComparePaths(a, b int32) int
}

// A key in the arena is its outputs' numbers (keyIDs, then 4 bytes each)
// or their text (keyText, then space-separated).
const (
	keyIDs  = 'i'
	keyText = 't'
)

// Set is a set of roots, one per distinct set of outputs. Its roots live
// in one arena (their outputs' key) and a slice of fixed-size records;
// it finds a root by the hash of its key, so no string header or pointer
// a root is left for the garbage collector.
type Set struct {
	paths  Paths
	recs   []rec
	keys   arena.Arena
	byHash map[uint64]ID
	// collided are roots whose key's hash another key had first.
	collided map[string]ID
	// jobs are the jobs' names, in keys; jobIDs finds them (its keys
	// are the arena's bytes, which never move).
	jobs   []arena.Str
	jobIDs map[string]int32
	seed   maphash.Seed
}

type rec struct {
	key arena.Str
	// job indexes jobs; derivedJob: the job latest.JobOf finds in the
	// first output's name (a build without a Hydra job: most roots).
	job  int32
	nsec int32
	sec  int64
}

func (r *rec) built() time.Time { return time.Unix(r.sec, int64(r.nsec)).UTC() }

// New returns an empty set.
func New() *Set { return NewOver(nil) }

// NewOver returns an empty set whose roots' outputs are kept as numbers
// where paths knows them.
func NewOver(paths Paths) *Set {
	return &Set{paths: paths, byHash: map[uint64]ID{}, collided: map[string]ID{}, jobIDs: map[string]int32{}, seed: maphash.MakeSeed()}
}

// encode is the key of outputs, sorted and without repeats.
func (s *Set) encode(outputs []string) string {
	if s.paths != nil {
		b := make([]byte, 1, 1+4*len(outputs))
		b[0] = keyIDs
		for _, o := range outputs {
			id, ok := s.paths.PathID(o)
			if !ok {
				b = nil
				break
			}
			b = binary.LittleEndian.AppendUint32(b, uint32(id))
		}
		if b != nil {
			return string(b)
		}
	}
	return string(keyText) + strings.Join(outputs, " ")
}

// Paths is what the set numbers outputs by (nil: none).
func (s *Set) Paths() Paths { return s.paths }

// Len is the number of roots.
func (s *Set) Len() int { return len(s.recs) }

// Add records a build of r.Outputs; a later build of the same outputs moves
// LastBuilt forward and takes its job.
func (s *Set) Add(r Root) {
	if len(r.Outputs) == 0 {
		return
	}
	if !slices.IsSorted(r.Outputs) || hasDup(r.Outputs) {
		r.Outputs = slices.Compact(slices.Sorted(slices.Values(r.Outputs)))
	}
	k := s.encode(r.Outputs)
	id, ok := s.find(k)
	if ok {
		old := &s.recs[id]
		if r.LastBuilt.After(old.built()) {
			old.sec, old.nsec, old.job = r.LastBuilt.Unix(), int32(r.LastBuilt.Nanosecond()), s.jobOf(r)
		}
		return
	}
	id = ID(len(s.recs))
	s.recs = append(s.recs, rec{key: s.keys.Add(k), job: s.jobOf(r), sec: r.LastBuilt.Unix(), nsec: int32(r.LastBuilt.Nanosecond())})
	h := maphash.String(s.seed, k)
	if _, taken := s.byHash[h]; taken {
		s.collided[k] = id
	} else {
		s.byHash[h] = id
	}
}

func hasDup(sorted []string) bool {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return true
		}
	}
	return false
}

// Find returns the root of these outputs, if the set has it.
func (s *Set) Find(outputs []string) (ID, bool) {
	if len(outputs) == 0 {
		return 0, false
	}
	if !slices.IsSorted(outputs) || hasDup(outputs) {
		outputs = slices.Compact(slices.Sorted(slices.Values(outputs)))
	}
	return s.find(s.encode(outputs))
}

// find returns the root whose key is k.
func (s *Set) find(k string) (ID, bool) {
	if id, ok := s.byHash[maphash.String(s.seed, k)]; ok && s.keys.Get(s.recs[id].key) == k {
		return id, true
	}
	id, ok := s.collided[k]
	return id, ok
}

const derivedJob = -1

// jobOf is r's job as a rec keeps it; r.Outputs are sorted.
func (s *Set) jobOf(r Root) int32 {
	if r.Job == jobOfOutput(r.Outputs[0]) {
		return derivedJob
	}
	return s.job(r.Job)
}

// jobOfOutput is the job latest.JobOf gives a build without a Hydra job
// or a derivation, of this output.
func jobOfOutput(o string) string { return latest.JobOf(&events.Built{OutPaths: []string{o}}) }

// job interns j. Copied into the arena: a job is often part of a
// decoded event's string, which it would keep alive.
func (s *Set) job(j string) int32 {
	if id, ok := s.jobIDs[j]; ok {
		return id
	}
	id := int32(len(s.jobs))
	a := s.keys.Add(j)
	s.jobs = append(s.jobs, a)
	s.jobIDs[s.keys.Get(a)] = id
	return id
}

// AddBuilt records a "built" event.
func (s *Set) AddBuilt(ev *events.Built) {
	s.Add(Root{Outputs: ev.OutPaths, Job: latest.JobOf(ev), LastBuilt: ev.Time})
}

// Root returns the root id, its outputs newly allocated.
func (s *Set) Root(id ID) Root {
	r := &s.recs[id]
	var outs []string
	s.EachOutput(id, func(o string, pathID int32) bool {
		if pathID >= 0 {
			o = s.paths.PathText(pathID)
		}
		outs = append(outs, o)
		return true
	})
	return Root{Outputs: outs, Job: s.Job(id), LastBuilt: r.built()}
}

// Job is root id's job.
func (s *Set) Job(id ID) string {
	if j := s.recs[id].job; j != derivedJob {
		return s.keys.Get(s.jobs[j])
	}
	var first string
	s.EachOutput(id, func(o string, pathID int32) bool {
		if first = o; pathID >= 0 {
			first = s.paths.PathText(pathID)
		}
		return false
	})
	return jobOfOutput(first)
}

// LastBuilt is when root id was last built.
func (s *Set) LastBuilt(id ID) time.Time { return s.recs[id].built() }

// EachOutput calls fn with each of root id's outputs until it returns
// false, without allocating: an output its Paths knows as its number
// (and ""), any other as its text (and -1).
func (s *Set) EachOutput(id ID, fn func(text string, pathID int32) bool) {
	k := s.keys.Get(s.recs[id].key)
	if k[0] == keyIDs {
		for k = k[1:]; len(k) >= 4; k = k[4:] {
			if !fn("", num(k)) {
				return
			}
		}
		return
	}
	k = k[1:]
	for {
		o, rest, more := strings.Cut(k, " ")
		if !fn(o, -1) || !more {
			return
		}
		k = rest
	}
}

// compareOutputs orders roots by their outputs' text, space-separated,
// without making it where both are numbers: store paths hold no byte
// below the space, so that order is their outputs' one by one.
func (s *Set) compareOutputs(a, b *rec) int {
	ka, kb := s.keys.Get(a.key), s.keys.Get(b.key)
	if ka[0] != keyIDs || kb[0] != keyIDs {
		return strings.Compare(s.recText(a), s.recText(b))
	}
	for ka, kb = ka[1:], kb[1:]; len(ka) >= 4 && len(kb) >= 4; ka, kb = ka[4:], kb[4:] {
		if c := s.paths.ComparePaths(num(ka), num(kb)); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(ka), len(kb))
}

// num is the output number k starts with.
func num(k string) int32 {
	return int32(uint32(k[0]) | uint32(k[1])<<8 | uint32(k[2])<<16 | uint32(k[3])<<24)
}

// text is root id's outputs, space-separated.
func (s *Set) recText(r *rec) string {
	k := s.keys.Get(r.key)
	if k[0] == keyText {
		return k[1:]
	}
	var outs []string
	for k = k[1:]; len(k) >= 4; k = k[4:] {
		outs = append(outs, s.paths.PathText(num(k)))
	}
	return strings.Join(outs, " ")
}

// Newest returns the roots' ids, newest first (ties by outputs): 4 bytes
// a root.
func (s *Set) Newest() []ID {
	out := make([]ID, len(s.recs))
	for i := range out {
		out[i] = ID(i)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := &s.recs[out[i]], &s.recs[out[j]]
		if a.sec != b.sec || a.nsec != b.nsec {
			return a.sec > b.sec || (a.sec == b.sec && a.nsec > b.nsec)
		}
		return s.compareOutputs(a, b) < 0
	})
	return out
}

// All returns the roots, newest first (ties by outputs).
func (s *Set) All() []Root {
	ids := s.Newest()
	out := make([]Root, len(ids))
	for i, id := range ids {
		out[i] = s.Root(id)
	}
	return out
}

// The roots file, {"version":1,"roots":[Root...]}, is the roots a cache
// remembers, so that roots outlive the stream's max-age: prune merges it
// with the stream and writes it back.

// LoadFile adds the roots recorded in path; a missing file adds none. It
// decodes one root at a time: the file of a million roots is 150 MB.
func (s *Set) LoadFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("roots file: %w", err)
	}
	defer f.Close()
	bad := func(err error) error {
		return errs.Errorf(errs.Invalid, "roots file %s: %v (move it away to start from the stream's roots only)", path, err)
	}
	version := 0
	var early []Root // roots read before the version: added once it is known
	err = decodeFile(f, func(v int) error {
		version = v
		if v != 1 {
			return errs.Errorf(errs.Invalid, "roots file %s: version %d, this code reads version 1", path, v)
		}
		for _, r := range early {
			s.Add(r)
		}
		early = nil
		return nil
	}, func(r Root) {
		if version == 1 {
			s.Add(r)
		} else {
			early = append(early, r)
		}
	})
	if err != nil {
		if errs.Is(err, errs.Invalid) {
			return err
		}
		return bad(err)
	}
	if version != 1 {
		return errs.Errorf(errs.Invalid, "roots file %s: version %d, this code reads version 1", path, version)
	}
	return nil
}

// decodeFile reads {"version": N, "roots": [...]} as json.Unmarshal into
// file would (keys matched without case, unknown keys skipped), calling
// version and root as it goes.
func decodeFile(r io.Reader, version func(int) error, root func(Root)) error {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil {
		return err
	} else if d, ok := t.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("not a JSON object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch k, _ := t.(string); {
		case strings.EqualFold(k, "version"):
			var v int
			if err := dec.Decode(&v); err != nil {
				return err
			}
			if err := version(v); err != nil {
				return err
			}
		case strings.EqualFold(k, "roots"):
			t, err := dec.Token()
			if err != nil {
				return err
			}
			if t == nil {
				continue // null: no roots
			}
			if d, ok := t.(json.Delim); !ok || d != '[' {
				return fmt.Errorf("roots: not an array")
			}
			for dec.More() {
				var r Root
				if err := dec.Decode(&r); err != nil {
					return err
				}
				root(r)
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the roots")
	}
	return nil
}

// SaveFile writes the roots to path atomically, keeping only those for
// which keep returns true, a root at a time.
func (s *Set) SaveFile(path string, keep func(Root) bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("roots file: %w", err)
	}
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return fmt.Errorf("roots file: %w", err)
	}
	defer f.Abort()
	w := newWriter(f)
	w.str(`{"version":1,"roots":[`)
	first := true
	for _, id := range s.Newest() {
		r := s.Root(id)
		if !keep(r) {
			continue
		}
		if !first {
			w.str(",")
		}
		first = false
		w.json(r)
	}
	w.str("]}\n")
	if err := w.flush(); err != nil {
		return fmt.Errorf("roots file: %w", err)
	}
	return f.Commit()
}
