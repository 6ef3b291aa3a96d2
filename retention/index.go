package retention

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/arena"
	"github.com/nix-ipfs/nix-ipfs/latest"
	"github.com/nix-ipfs/nix-ipfs/retention/packed"
	"github.com/nix-ipfs/nix-ipfs/retention/roots"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Index is what a cache directory holds, in a form that costs about 300
// bytes a path (issue 24: a million paths in bounded memory): every hash
// part, the cache's and those only referenced, has a dense id; a path's
// references are ids; its strings live in one arena, packed (package
// packed).
type Index struct {
	Dir string
	// Unreadable are narinfos that could not be read or parsed, with why.
	// They are left alone: what they reference is unknown.
	Unreadable  []string
	journalNARs []string
	// RecentlyPublished are store paths with a "published" event within
	// the grace period (Load fills it).
	RecentlyPublished map[string]bool
	// Shadowed are journal entries whose path is in the cache again.
	Shadowed []string
	// NarInfoBytes is the total size of the narinfos.
	NarInfoBytes int64
	// Latest are the outputs of each job's latest build, from the cache's
	// latest-build documents (package latest): live roots whatever the
	// policy, so a fleet pulling a job's latest never finds it gone.
	Latest map[string][]string

	// keys are the hash parts of the cache's narinfos, sorted: the id
	// of keys[i] is i. Those of the journal's and of references the cache
	// lacks have the ids after them, in extra.
	keys      []hashKey
	extra     map[hashKey]int32
	extraKeys []hashKey
	entries   []entry   // by id
	refs      []int32   // entries' references, by entry.refOff
	nars      []narFile // the files in nar/, sorted by packed URL
	// urls are the NAR URLs of the paths whose NAR file is missing.
	urls  map[int32]str
	arena arena.Arena
}

// hashKey is a hash part: no string header, no pointer for the garbage
// collector to follow.
type hashKey [storepath.HashLen]byte

func compareKeys(a hashKey, b *hashKey) int { return bytes.Compare(a[:], b[:]) }

// entry is one path, 64 bytes: those only referenced (not in the cache)
// are not present and have nothing else. Its strings are packed, the
// store path without its hash part (the id's key).
type entry struct {
	storePath, narHash, cid str
	refOff                  uint32
	refLen                  uint32 // the count, and the flags above refMax
	nar                     int32  // index in nars, -1: missing
	infoSize                uint32
	fileSize, narSize       uint64
	modTime                 int64 // Unix nanoseconds
}

const (
	refMax = 1<<24 - 1
	// present: the path is in the cache (or its journal).
	present = 1 << 24
	// retiring: a narinfo an interrupted prune moved into the journal:
	// it has left the cache, its retirement is not finished.
	retiring = 1 << 25
)

func (e *entry) present() bool  { return e.refLen&present != 0 }
func (e *entry) retiring() bool { return e.refLen&retiring != 0 }

// NarFile is one file in nar/.
type NarFile struct {
	Size    int64
	ModTime time.Time
}

type narFile struct {
	url     str
	size    int64
	modTime int64
}

// str is a string in the index's arena.
type str = arena.Str

// RootsFile is where prune remembers the roots, relative to the cache.
const RootsFile = cachedir.RootsFile

// id is the id of hash part h, -1 if the index has never seen it.
func (ix *Index) id(h string) int32 {
	if len(h) != storepath.HashLen {
		return -1
	}
	k := hashKey([]byte(h))
	if i, ok := slices.BinarySearchFunc(ix.keys, &k, compareKeys); ok {
		return int32(i)
	}
	if id, ok := ix.extra[k]; ok {
		return id
	}
	return -1
}

// intern returns h's id, giving it one if it has none.
func (ix *Index) intern(h string) int32 {
	if id := ix.id(h); id >= 0 {
		return id
	}
	id := int32(len(ix.entries))
	k := hashKey([]byte(h))
	if ix.extra == nil {
		ix.extra = map[hashKey]int32{}
	}
	ix.extra[k] = id
	ix.extraKeys = append(ix.extraKeys, k)
	ix.entries = append(ix.entries, entry{nar: -1})
	return id
}

// hash is id's hash part.
func (ix *Index) hash(id int32) string {
	if int(id) < len(ix.keys) {
		return string(ix.keys[id][:])
	}
	return string(ix.extraKeys[int(id)-len(ix.keys)][:])
}

// refsOf are e's references.
func (ix *Index) refsOf(e *entry) []int32 { return ix.refs[e.refOff : e.refOff+e.refLen&refMax] }

func (ix *Index) storePath(id int32) string {
	return packed.StorePathText(ix.arena.Get(ix.entries[id].storePath), ix.hash(id))
}
func (ix *Index) hashPart(id int32) string { return storepath.HashPart(ix.storePath(id)) }
func (ix *Index) narHash(e *entry) string  { return packed.NarHashText(ix.arena.Get(e.narHash)) }
func (ix *Index) cid(e *entry) string      { return packed.CIDText(ix.arena.Get(e.cid)) }
func (ix *Index) url(id int32) string {
	if e := &ix.entries[id]; e.nar >= 0 {
		return packed.NarURLText(ix.arena.Get(ix.nars[e.nar].url))
	}
	return packed.NarURLText(ix.arena.Get(ix.urls[id]))
}

// ComparePaths orders ids by their store paths, without unpacking
// those of listed hash parts under /nix/store: their order is their ids'.
func (ix *Index) ComparePaths(a, b int32) int {
	pa, pb := ix.arena.Get(ix.entries[a].storePath), ix.arena.Get(ix.entries[b].storePath)
	if int(a) < len(ix.keys) && int(b) < len(ix.keys) && packed.UnderHash(pa) && packed.UnderHash(pb) {
		return cmp.Compare(a, b)
	}
	return strings.Compare(ix.storePath(a), ix.storePath(b))
}

// hasStorePath reports whether the cache holds store path sp.
func (ix *Index) hasStorePath(sp string) bool {
	id := ix.id(storepath.HashPart(sp))
	return id >= 0 && ix.entries[id].present() && packed.StorePathIs(ix.arena.Get(ix.entries[id].storePath), ix.hash(id), sp)
}

// PathID is store path sp's id if the cache holds it (roots.Paths: a
// root keeps its outputs as ids).
func (ix *Index) PathID(sp string) (int32, bool) {
	if !ix.hasStorePath(sp) {
		return 0, false
	}
	return ix.id(storepath.HashPart(sp)), true
}

// PathText is the store path of id.
func (ix *Index) PathText(id int32) string { return ix.storePath(id) }

var _ roots.Paths = (*Index)(nil)

// findNAR is the index in nars of the file at url, -1 if none.
func (ix *Index) findNAR(url string) int32 {
	p := packed.NarURL(url)
	i, ok := slices.BinarySearchFunc(ix.nars, p, func(f narFile, u string) int { return strings.Compare(ix.arena.Get(f.url), u) })
	if !ok {
		return -1
	}
	return int32(i)
}

// parsed is one narinfo as a reader goroutine hands it over.
type parsed struct {
	hashPart, storePath, url, narHash, cid string
	refs                                   []string
	fileSize, narSize                      uint64
	infoSize                               int64
	modTime                                time.Time
	retiring                               bool
	bad                                    string
}

// ReadIndex reads every narinfo of the cache in dir, the journal of an
// interrupted prune, and the list of NARs. It lists the directories a
// chunk at a time and keeps each narinfo's fields, not its text.
func ReadIndex(dir string) (*Index, error) {
	ix := &Index{Dir: dir}
	c := cachedir.Cache{Dir: dir}
	// The hash parts first (32 bytes each): their count sizes the rest.
	var names []hashKey
	var oddNames []string // no store path's hash part: found unreadable below
	if err := c.EachNarInfo(func(h string) {
		if len(h) == storepath.HashLen {
			names = append(names, hashKey([]byte(h)))
		} else {
			oddNames = append(oddNames, h)
		}
	}); err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	if err := c.CheckCacheInfo(); err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	// Sorted, the names are the ids: no map, and a store path need not
	// keep its hash part.
	slices.SortFunc(names, func(a, b hashKey) int { return compareKeys(a, &b) })
	ix.keys = names
	ix.entries = make([]entry, len(names), len(names)+len(names)/16)
	for i := range ix.entries {
		ix.entries[i].nar = -1
	}
	ix.refs = make([]int32, 0, 4*(len(names)+1))
	ix.nars = make([]narFile, 0, len(names)+1)
	if err := c.EachNAR(func(f cachedir.File) {
		ix.nars = append(ix.nars, narFile{url: ix.arena.Add(packed.NarURL(f.URL)), size: f.Size, modTime: f.ModTime.UnixNano()})
	}); err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	jinfos, jnars, err := c.Journal()
	if err != nil {
		return nil, fmt.Errorf("cache %s: prune journal: %w", dir, err)
	}
	ix.sortNARs()
	// A NAR an interrupted prune moved out and had not yet removed (or
	// put back): the next prune puts it back first, then decides.
	for _, f := range jnars {
		ix.journalNARs = append(ix.journalNARs, f.Name)
		if ix.findNAR(f.URL) < 0 {
			ix.nars = append(ix.nars, narFile{url: ix.arena.Add(packed.NarURL(f.URL)), size: f.Size, modTime: f.ModTime.UnixNano()})
			ix.sortNARs()
		}
	}

	type job struct {
		path     string
		retiring bool
	}
	total := len(names) + len(oddNames) + len(jinfos)
	jobAt := func(i int) job {
		switch {
		case i < len(names):
			return job{path: filepath.Join(dir, cachedir.NarInfoName(string(names[i][:])))}
		case i < len(names)+len(oddNames):
			return job{path: filepath.Join(dir, cachedir.NarInfoName(oddNames[i-len(names)]))}
		}
		return job{path: jinfos[i-len(names)-len(oddNames)], retiring: true}
	}
	// Chunks of narinfos read in parallel, added in order: the cache's
	// before the journal's, as Shadowed needs. The adding is this
	// goroutine's alone: it goes on while the next chunk is read, so
	// the readers never wait for it (issue 24).
	// (1,024: the results of a chunk weigh about a kilobyte each.)
	const chunk = 1024
	type filled struct {
		res []parsed
		n   int
	}
	free, full := make(chan []parsed, 2), make(chan filled, 1)
	free <- make([]parsed, chunk)
	free <- make([]parsed, chunk)
	workers := max(2, runtime.GOMAXPROCS(0)*2)
	go func() {
		defer close(full)
		for start := 0; start < total; start += chunk {
			n := min(chunk, total-start)
			results := <-free
			var wg sync.WaitGroup
			next := make(chan int)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						j := jobAt(start + i)
						r, err := readEntry(j.path)
						if err != nil {
							r = parsed{bad: err.Error()}
						}
						results[i] = r
						results[i].retiring = j.retiring
					}
				}()
			}
			for i := 0; i < n; i++ {
				next <- i
			}
			close(next)
			wg.Wait()
			full <- filled{results, n}
		}
	}()
	for f := range full {
		for i := 0; i < f.n; i++ {
			ix.add(&f.res[i])
			f.res[i] = parsed{}
		}
		free <- f.res
	}
	if ix.Latest, err = readLatest(c); err != nil {
		return nil, fmt.Errorf("cache %s: latest-build documents: %w", dir, err)
	}
	return ix, nil
}

// readLatest reads every job's latest-build document. One that does not
// parse keeps nothing (a reader would refuse it too). Signatures are not
// checked: the cache directory is this host's own.
func readLatest(c cachedir.Cache) (map[string][]string, error) {
	jobs, err := c.LatestJobs()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, job := range jobs {
		b, err := c.ReadLatest(job)
		if err != nil || b == nil {
			continue
		}
		if d, err := latest.Parse(bytes.NewReader(b), ""); err == nil && d.Job == job {
			out[job] = d.Outputs
		}
	}
	return out, nil
}

func (ix *Index) sortNARs() {
	slices.SortFunc(ix.nars, func(a, b narFile) int { return strings.Compare(ix.arena.Get(a.url), ix.arena.Get(b.url)) })
}

// add puts one narinfo read into the index.
func (ix *Index) add(r *parsed) {
	if r.bad != "" {
		if !strings.Contains(r.bad, "no such file") { // removed while we read
			ix.Unreadable = append(ix.Unreadable, r.bad)
		}
		return
	}
	if len(r.hashPart) != storepath.HashLen {
		ix.Unreadable = append(ix.Unreadable, fmt.Sprintf("%s: not named after a store path's hash part", r.hashPart))
		return
	}
	if len(r.refs) > refMax {
		ix.Unreadable = append(ix.Unreadable, fmt.Sprintf("%s: %d references", r.storePath, len(r.refs)))
		return
	}
	id := ix.intern(r.hashPart)
	if ix.entries[id].present() {
		// Back in the cache (published again) and still in the
		// journal: the cache's wins, the journal entry is stale.
		ix.Shadowed = append(ix.Shadowed, r.hashPart)
		return
	}
	off := len(ix.refs)
	for _, h := range r.refs {
		ix.refs = append(ix.refs, ix.intern(h)) // may grow entries
	}
	flags := uint32(present)
	if r.retiring {
		flags |= retiring
	}
	e := &ix.entries[id]
	*e = entry{
		storePath: ix.arena.Add(packed.StorePath(r.storePath, r.hashPart)), narHash: ix.arena.Add(packed.NarHash(r.narHash)), cid: ix.arena.Add(packed.CID(r.cid)),
		refOff: uint32(off), refLen: uint32(len(r.refs)) | flags,
		nar:      ix.findNAR(r.url),
		fileSize: r.fileSize, narSize: r.narSize, infoSize: uint32(min(r.infoSize, math.MaxUint32)), modTime: r.modTime.UnixNano(),
	}
	if e.nar < 0 {
		if ix.urls == nil {
			ix.urls = map[int32]str{}
		}
		ix.urls[id] = ix.arena.Add(packed.NarURL(r.url))
	}
	if !r.retiring {
		ix.NarInfoBytes += r.infoSize
	}
}

// readEntry reads one narinfo file.
func readEntry(p string) (parsed, error) {
	ni, fi, err := cachedir.ReadNarInfoFile(p)
	if err != nil {
		return parsed{}, err
	}
	hashPart := cachedir.HashPartOf(p)
	h, err := ni.NarHashNix32()
	if err != nil {
		return parsed{}, fmt.Errorf("%s: %w", p, err)
	}
	e := parsed{
		hashPart: hashPart, storePath: ni.StorePath, url: ni.URL, fileSize: ni.FileSize, narSize: ni.NarSize,
		narHash: h, cid: ni.IPFSHash, infoSize: fi.Size(), modTime: fi.ModTime(),
	}
	for _, r := range ni.References {
		if len(r) < storepath.HashLen {
			return parsed{}, fmt.Errorf("%s: reference %q is not a store path basename", p, r)
		}
		if h := r[:storepath.HashLen]; h != hashPart {
			e.refs = append(e.refs, h)
		}
	}
	return e, nil
}
