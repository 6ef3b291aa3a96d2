package cachedir

import (
	"errors"
	"fmt"
	"io"
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

// File is a NAR of the cache (or of the journal).
type File struct {
	// Name is the file's name; URL is "nar/<Name>", as narinfos name it.
	Name    string
	URL     string
	Size    int64
	ModTime time.Time
}

// CheckCacheInfo fails unless the directory has a nix-cache-info: a guard
// against pruning a directory that is no binary cache.
func (c Cache) CheckCacheInfo() error {
	if _, err := os.Stat(c.CacheInfoPath()); err != nil {
		return fmt.Errorf("no %s: not a binary cache directory? (%w)", CacheInfoName, err)
	}
	return nil
}

// NarInfoFiles lists the paths of the cache's narinfo files (temp files
// and anything but regular files left out).
func (c Cache) NarInfoFiles() ([]string, error) {
	ents, err := os.ReadDir(c.Dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range ents {
		if n := e.Name(); isNarInfoFile(n) && e.Type().IsRegular() {
			files = append(files, filepath.Join(c.Dir, n))
		}
	}
	return files, nil
}

func isNarInfoFile(name string) bool {
	return strings.HasSuffix(name, NarInfoExt) && !strings.HasPrefix(name, atomicfile.TempPrefix)
}

// HashPartOf is the hash part of a narinfo file's path (its name without
// .narinfo).
func HashPartOf(narinfoFile string) string {
	return strings.TrimSuffix(filepath.Base(narinfoFile), NarInfoExt)
}

// NARs lists the files in nar/ (temp files and anything but regular files
// left out). A cache without nar/ has none.
func (c Cache) NARs() ([]File, error) {
	ents, err := os.ReadDir(c.NarDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var out []File
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, File{Name: e.Name(), URL: NarDirName + "/" + e.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
	}
	return out, nil
}

// Journal lists what an interrupted prune left in the journal: the paths
// of narinfos it moved out, and NARs it moved out and had not removed (or
// put back). A cache never pruned has an empty journal.
func (c Cache) Journal() (narinfos []string, nars []File, err error) {
	ents, err := os.ReadDir(c.path(JournalDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".nar") {
			if fi, err := e.Info(); err == nil {
				nars = append(nars, File{Name: e.Name(), URL: NarDirName + "/" + e.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
			}
		}
	}
	for _, e := range ents {
		if isNarInfoFile(e.Name()) {
			narinfos = append(narinfos, filepath.Join(c.path(JournalDir), e.Name()))
		}
	}
	return narinfos, nars, nil
}

// MakeJournal creates the journal directory.
func (c Cache) MakeJournal() error { return os.MkdirAll(c.path(JournalDir), 0o755) }

// listChunk is how many directory entries EachNarInfo and EachNAR read at
// a time: a cache of a million paths is never listed into memory at once
// (os.ReadDir would hold every name and its lstat).
const listChunk = 4096

// eachEntry calls fn with dir's entries a chunk at a time, in directory
// order (not sorted). A missing directory has none.
func eachEntry(dir string, fn func(fs.DirEntry)) error {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(listChunk)
		for _, e := range ents {
			fn(e)
		}
		if errors.Is(err, io.EOF) || (err == nil && len(ents) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// EachNarInfo calls fn with the hash part of each narinfo file of the cache
// (temp files and anything but regular files left out), in directory
// order: NarInfoFiles for a cache too large to list at once.
func (c Cache) EachNarInfo(fn func(hashPart string)) error {
	return eachEntry(c.Dir, func(e fs.DirEntry) {
		if n := e.Name(); isNarInfoFile(n) && e.Type().IsRegular() {
			fn(strings.TrimSuffix(n, NarInfoExt))
		}
	})
}

// EachNAR calls fn with each file in nar/ (temp files and anything but
// regular files left out), in directory order: NARs for a cache too large
// to list at once. The lstats a file's size and time need run a chunk at
// a time on every CPU: a serial million of them was a fifth of reading a
// cache's index (issue 24).
func (c Cache) EachNAR(fn func(File)) error {
	f, err := os.Open(c.NarDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	workers := max(2, runtime.GOMAXPROCS(0))
	files := make([]File, listChunk)
	for {
		ents, err := f.ReadDir(listChunk)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < len(ents); i += workers {
					files[i] = File{}
					e := ents[i]
					if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) || !e.Type().IsRegular() {
						continue
					}
					if fi, err := e.Info(); err == nil { // else removed meanwhile
						files[i] = File{Name: e.Name(), URL: NarDirName + "/" + e.Name(), Size: fi.Size(), ModTime: fi.ModTime()}
					}
				}
			})
		}
		wg.Wait()
		for i := range ents {
			if files[i].Name != "" {
				fn(files[i])
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && len(ents) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ReadNarInfoFile reads and parses the narinfo file p, checked against the
// layout: its StorePath is the one its name says, its URL is under nar/.
func ReadNarInfoFile(p string) (*narinfo.NarInfo, fs.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	ni, err := parseNarInfoFile(f, fi.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	if !path.IsAbs(ni.StorePath) || storepath.HashPart(ni.StorePath) != HashPartOf(p) {
		return nil, nil, fmt.Errorf("%s: StorePath %q does not match the file name", p, ni.StorePath)
	}
	if err := CheckNarURL(ni.URL); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	return ni, fi, nil
}

// parseNarInfoFile parses the narinfo open as f, of size bytes by its
// fstat, in one read where narinfo.Parse reads until it sees the end (a
// second read per file: a million of them at a million paths, issue 24).
// A narinfo is replaced by a rename, never written in place, so the open
// file keeps its size; a read that says otherwise falls back to Parse.
func parseNarInfoFile(f *os.File, size int64) (*narinfo.NarInfo, error) {
	if size <= 0 || size > narinfo.MaxSize {
		return narinfo.Parse(f)
	}
	b := make([]byte, size+1)
	n, err := f.Read(b)
	if err != nil || int64(n) != size {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return narinfo.Parse(f)
	}
	return narinfo.ParseBytes(b[:n])
}
