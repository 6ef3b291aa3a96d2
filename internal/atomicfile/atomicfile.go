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
	"time"
)

// TempPrefix starts every temp file, so Clean and readers can skip them.
const TempPrefix = ".tmp-"

// File is a temp file that becomes path on Commit.
type File struct {
	*os.File
	path string
	done bool
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
	f.path = path
	if f.done {
		return fmt.Errorf("%s: already committed or aborted", f.path)
	}
	f.done = true
	if err := f.Sync(); err != nil {
		f.abort()
		return fmt.Errorf("fsync %s: %w", f.path, err)
	}
	if err := f.File.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("close %s: %w", f.path, err)
	}
	if err := os.Rename(f.Name(), f.path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("rename into %s: %w", f.path, err)
	}
	return SyncDir(filepath.Dir(f.path))
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

// Clean removes temp files in dir older than age: what a crashed writer left.
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
