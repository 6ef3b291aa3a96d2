package retention

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
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
	// NARs are the files in nar/ (by URL "nar/<name>"), with their size
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
}

// NarFile is one file in nar/.
type NarFile struct {
	Size    int64
	ModTime time.Time
}

// Layout of the state prune keeps next to the publisher's, in the cache's
// .nix-ipfs/ directory (never served).
const (
	stateDir = ".nix-ipfs"
	// journalDir holds narinfos moved out of the cache by a prune whose
	// retirement of them is not finished.
	journalDir = stateDir + "/retiring"
	// announcedDir is the publisher's record of announced paths.
	announcedDir = stateDir + "/announced"
	// RootsFile is where prune remembers the roots, relative to the cache.
	RootsFile = stateDir + "/roots.json"
)

// ReadIndex reads every narinfo of the cache in dir, the journal of an
// interrupted prune, and the list of NARs.
func ReadIndex(dir string) (*Index, error) {
	ix := &Index{Dir: dir, Entries: map[string]*Entry{}, NARs: map[string]NarFile{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nix-cache-info")); err != nil {
		return nil, fmt.Errorf("cache %s: no nix-cache-info: not a binary cache directory? (%w)", dir, err)
	}
	nars, err := os.ReadDir(filepath.Join(dir, "nar"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	for _, e := range nars {
		if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		ix.NARs["nar/"+e.Name()] = NarFile{Size: fi.Size(), ModTime: fi.ModTime()}
	}

	type job struct {
		path     string
		retiring bool
	}
	var jobs []job
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".narinfo") && !strings.HasPrefix(n, atomicfile.TempPrefix) && e.Type().IsRegular() {
			jobs = append(jobs, job{path: filepath.Join(dir, n)})
		}
	}
	jents, err := os.ReadDir(filepath.Join(dir, journalDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cache %s: prune journal: %w", dir, err)
	}
	for _, e := range jents {
		// A NAR an interrupted prune moved out and had not yet removed (or
		// put back): the next prune puts it back first, then decides.
		if strings.HasSuffix(e.Name(), ".nar") {
			if fi, err := e.Info(); err == nil {
				ix.journalNARs = append(ix.journalNARs, e.Name())
				if _, ok := ix.NARs["nar/"+e.Name()]; !ok {
					ix.NARs["nar/"+e.Name()] = NarFile{Size: fi.Size(), ModTime: fi.ModTime()}
				}
			}
		}
	}
	for _, e := range jents {
		if strings.HasSuffix(e.Name(), ".narinfo") && !strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
			jobs = append(jobs, job{path: filepath.Join(dir, journalDir, e.Name()), retiring: true})
		}
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
	return ix, nil
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
	base := filepath.Base(p)
	hashPart := strings.TrimSuffix(base, ".narinfo")
	if !path.IsAbs(ni.StorePath) || storepath.HashPart(ni.StorePath) != hashPart {
		return nil, fmt.Errorf("%s: StorePath %q does not match the file name", p, ni.StorePath)
	}
	if ni.URL == "" || strings.Contains(ni.URL, "..") || !strings.HasPrefix(ni.URL, "nar/") {
		return nil, fmt.Errorf("%s: URL %q is not under nar/", p, ni.URL)
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
