// Package atomicfile writes files that others read so that a reader sees
// either the old file, no file, or the whole new one: a temp file in the same
// directory, fsync, rename, fsync of the directory. A crash at any point
// leaves at most a temp file, which Clean removes.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// TempPrefix starts every temp file, so Clean and readers can skip them.
const TempPrefix = ".tmp-"

// File is a temp file that becomes path on Commit.
type File struct {
	*os.File
	path string
	done bool

	behind, written, flushed int64 // WriteBehind's interval and progress
}

// Create starts a write of path.
func Create(path string, perm os.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), TempPrefix+filepath.Base(path)+"-")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{File: f, path: path}, nil
}

// Commit fsyncs the data, renames the temp file to the final path and
// fsyncs the directory, so the file survives a crash once Commit returns.
func (f *File) Commit() error { return f.CommitTo(f.path) }

// CommitTo commits to another path in the same directory: for files named
// by their content's hash, known only once the content is written.
func (f *File) CommitTo(path string) error {
	if err := f.commitFile(path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(f.path))
}

// commitFile fsyncs the data and renames the temp file to path.
func (f *File) commitFile(path string) error {
	if err := f.syncData(path); err != nil {
		return err
	}
	return f.rename()
}

// Abort removes the temp file. It is safe after Commit (then it does nothing).
func (f *File) Abort() {
	if !f.done {
		f.done = true
		f.abort()
	}
}

func (f *File) abort() {
	f.File.Close()
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// WriteHint writes data to path atomically for readers (temp file, rename)
// but without the fsyncs: for records whose loss in a crash of the machine
// costs only work done again, never a wrong answer. A reader sees the old
// file, no file or the whole new one while the machine runs; after a power
// loss the file may be missing or empty, and must be treated as absent.
func WriteHint(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	f.done = true
	if err := f.File.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	return nil
}

// syncDir is SyncDir; tests count its calls.
var syncDir = SyncDir

// SyncDir fsyncs a directory, making renames in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// StaleAfter is how long a temp file goes unwritten before Clean may take
// it for a dead writer's. A live writer writes more often; several
// processes may share a directory (publishers sharing a cache), so a temp
// file is never removed just because this process did not create it.
const StaleAfter = 10 * time.Minute

// Clean removes temp files in dir not written for age: what a crashed
// writer left. Where other processes may be writing, age must be at least
// StaleAfter.
func Clean(dir string, age time.Duration) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), TempPrefix) {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) >= age {
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				n++
			}
		}
	}
	return n, nil
}

// DirSyncer makes renames durable with fewer directory fsyncs when many
// goroutines commit into the same directories at once (group commit):
// a caller waits for a directory fsync that began after its rename, and
// one fsync serves every caller waiting for it. Each file's own data is
// still fsynced before its rename, so what a caller is promised is
// unchanged: once its commit returns, its file survives a crash.
type DirSyncer struct {
	mu   sync.Mutex
	dirs map[string]*dirSync
}

type dirSync struct {
	mu      sync.Mutex
	cond    *sync.Cond
	started uint64 // generations of fsync begun
	done    uint64 // the last generation finished
	running bool
	err     error // of generation done
}

// Sync returns once an fsync of dir that began after the call has
// finished, with that fsync's error.
func (s *DirSyncer) Sync(dir string) error {
	s.mu.Lock()
	if s.dirs == nil {
		s.dirs = map[string]*dirSync{}
	}
	d := s.dirs[dir]
	if d == nil {
		d = &dirSync{}
		d.cond = sync.NewCond(&d.mu)
		s.dirs[dir] = d
	}
	s.mu.Unlock()

	d.mu.Lock()
	defer d.mu.Unlock()
	// A running fsync may have begun before our rename: we need the next.
	want := d.started + 1
	for d.done < want {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		gen := d.started
		d.mu.Unlock()
		err := syncDir(dir)
		d.mu.Lock()
		d.running = false
		d.done, d.err = gen, err
		d.cond.Broadcast()
	}
	return d.err
}

// CommitGrouped is CommitTo with the directory fsync shared through s.
func (f *File) CommitGrouped(path string, s *DirSyncer) error {
	if err := f.commitFile(path); err != nil {
		return err
	}
	return s.Sync(filepath.Dir(f.path))
}

// WriteFileGrouped is WriteFile with the directory fsync shared through s.
func WriteFileGrouped(path string, data []byte, perm os.FileMode, s *DirSyncer) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.CommitGrouped(path, s)
}
