package retention

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/latest"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Entry is one path of the cache, from its narinfo.
type Entry struct {
	HashPart  string
	StorePath string
	// Refs are the hash parts of the path's references, itself excluded.
	Refs     []string
	URL      string
	FileSize uint64
	NarSize  uint64
	// NarHash is "sha256:<nix32>".
	NarHash string
	CID     string
	// InfoSize is the narinfo's size in bytes.
	InfoSize int64
	// ModTime is the narinfo's; NarModTime the NAR's (zero if it is
	// missing).
	ModTime    time.Time
	NarModTime time.Time
	NarMissing bool
	// Retiring is true for a narinfo an interrupted prune moved into the
	// journal: it has left the cache, its retirement is not finished.
	Retiring bool
}

// Index is what a cache directory holds.
type Index struct {
	Dir     string
	Entries map[string]*Entry // by hash part
	// NARs are the files in nar/ (by URL, cachedir.File), with their size
	// and modification time.
	NARs map[string]NarFile
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
}

// NarFile is one file in nar/.
type NarFile struct {
	Size    int64
	ModTime time.Time
}

// RootsFile is where prune remembers the roots, relative to the cache.
const RootsFile = cachedir.RootsFile

// ReadIndex reads every narinfo of the cache in dir, the journal of an
// interrupted prune, and the list of NARs.
func ReadIndex(dir string) (*Index, error) {
	ix := &Index{Dir: dir, Entries: map[string]*Entry{}, NARs: map[string]NarFile{}}
	c := cachedir.Cache{Dir: dir}
	files, err := c.NarInfoFiles()
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	if err := c.CheckCacheInfo(); err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	nars, err := c.NARs()
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	for _, f := range nars {
		ix.NARs[f.URL] = NarFile{Size: f.Size, ModTime: f.ModTime}
	}

	type job struct {
		path     string
		retiring bool
	}
	var jobs []job
	for _, f := range files {
		jobs = append(jobs, job{path: f})
	}
	jinfos, jnars, err := c.Journal()
	if err != nil {
		return nil, fmt.Errorf("cache %s: prune journal: %w", dir, err)
	}
	// A NAR an interrupted prune moved out and had not yet removed (or
	// put back): the next prune puts it back first, then decides.
	for _, f := range jnars {
		ix.journalNARs = append(ix.journalNARs, f.Name)
		if _, ok := ix.NARs[f.URL]; !ok {
			ix.NARs[f.URL] = NarFile{Size: f.Size, ModTime: f.ModTime}
		}
	}
	for _, f := range jinfos {
		jobs = append(jobs, job{path: f, retiring: true})
	}

	type result struct {
		e   *Entry
		bad string
	}
	results := make([]result, len(jobs))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < max(2, runtime.GOMAXPROCS(0)*2); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				e, err := readEntry(jobs[i].path)
				if err != nil {
					results[i].bad = err.Error()
					continue
				}
				e.Retiring = jobs[i].retiring
				results[i].e = e
			}
		}()
	}
	for i := range jobs {
		next <- i
	}
	close(next)
	wg.Wait()

	for _, r := range results {
		if r.bad != "" {
			if !strings.Contains(r.bad, "no such file") { // removed while we read
				ix.Unreadable = append(ix.Unreadable, r.bad)
			}
			continue
		}
		e := r.e
		if _, ok := ix.Entries[e.HashPart]; ok {
			// Back in the cache (published again) and still in the
			// journal: the cache's wins, the journal entry is stale.
			ix.Shadowed = append(ix.Shadowed, e.HashPart)
			continue
		}
		if nf, ok := ix.NARs[e.URL]; ok {
			e.NarModTime = nf.ModTime
		} else {
			e.NarMissing = true
		}
		ix.Entries[e.HashPart] = e
		if !e.Retiring {
			ix.NarInfoBytes += e.InfoSize
		}
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

// readEntry reads one narinfo file.
func readEntry(p string) (*Entry, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	ni, err := narinfo.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	hashPart := cachedir.HashPartOf(p)
	if !path.IsAbs(ni.StorePath) || storepath.HashPart(ni.StorePath) != hashPart {
		return nil, fmt.Errorf("%s: StorePath %q does not match the file name", p, ni.StorePath)
	}
	if err := cachedir.CheckNarURL(ni.URL); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	h, err := ni.NarHashNix32()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	e := &Entry{
		HashPart: hashPart, StorePath: ni.StorePath, URL: ni.URL, FileSize: ni.FileSize, NarSize: ni.NarSize,
		NarHash: h, CID: ni.IPFSHash, InfoSize: fi.Size(), ModTime: fi.ModTime(),
	}
	for _, r := range ni.References {
		if len(r) < storepath.HashLen {
			return nil, fmt.Errorf("%s: reference %q is not a store path basename", p, r)
		}
		if h := r[:storepath.HashLen]; h != hashPart {
			e.Refs = append(e.Refs, h)
		}
	}
	return e, nil
}
