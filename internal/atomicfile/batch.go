package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// syncWorkers bounds the data fsyncs CommitAll runs at once: on ext4,
// fsyncs that overlap share the device's flushes, and a few in flight
// are enough for that.
const syncWorkers = 8

// CommitAll commits files[i] to paths[i] (each in its file's directory),
// for many small files at once: every file's data is fsynced (several at
// a time), then each is renamed into place, then each directory touched
// is fsynced once. What each caller is promised is Commit's: a file
// whose error is nil survives a crash, and no reader ever sees part of
// one. It returns one error per file, nil where the commit worked; a
// failed file is removed, and the others are committed all the same.
func CommitAll(files []*File, paths []string) []error {
	errs := make([]error, len(files))
	// Data first, in parallel.
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(syncWorkers, len(files)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = files[i].syncData(paths[i])
			}
		}()
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
	// Then the renames, and one fsync per directory for all of them.
	dirs := map[string][]int{}
	for i, f := range files {
		if errs[i] != nil {
			continue
		}
		if errs[i] = f.rename(); errs[i] == nil {
			d := filepath.Dir(f.path)
			dirs[d] = append(dirs[d], i)
		}
	}
	for d, idx := range dirs {
		if err := syncDir(d); err != nil {
			for _, i := range idx {
				errs[i] = err
			}
		}
	}
	return errs
}

// syncData is the first half of commitFile: the data fsynced and the
// file closed, to be renamed to path.
func (f *File) syncData(path string) error {
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
	return nil
}

// rename is its second half: the synced file takes its name.
func (f *File) rename() error {
	if err := os.Rename(f.Name(), f.path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("rename into %s: %w", f.path, err)
	}
	return nil
}
