package hook

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
)

// Spool is a directory of events that could not be published yet, one file
// per event, named so that a lexical sort is oldest first. Files are written
// with internal/atomicfile, so a reader never sees half an event.
type Spool struct {
	Dir string
}

const (
	spoolExt   = ".json"
	tmpPrefix  = atomicfile.TempPrefix
	badDir     = "bad"
	staleAfter = time.Hour
)

// Put writes one encoded event durably. The name is the time plus the
// event's id, so the same event spooled twice is one file.
func (s Spool) Put(id string, data []byte, now time.Time) (string, error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", fmt.Errorf("spool %s: %w", s.Dir, err)
	}
	// Ids are hex; anything else is kept out of the file name.
	short := strings.Map(func(r rune) rune {
		if (r >= '0' && r <= '9') || (r >= 'a' && r <= 'f') {
			return r
		}
		return -1
	}, id)
	if len(short) > 16 {
		short = short[:16]
	}
	name := fmt.Sprintf("%020d-%s%s", now.UnixNano(), short, spoolExt)
	final := filepath.Join(s.Dir, name)
	if err := atomicfile.WriteFile(final, data, 0o600); err != nil {
		return "", fmt.Errorf("spool %s: %w", s.Dir, err)
	}
	return final, nil
}

// List returns the spooled event files, oldest first. It removes temp files
// left by a writer that died long ago.
func (s Spool) List() ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.Dir, err)
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleAfter {
				os.Remove(filepath.Join(s.Dir, name))
			}
			continue
		}
		if e.Type().IsRegular() && strings.HasSuffix(name, spoolExt) {
			out = append(out, filepath.Join(s.Dir, name))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Remove deletes a spooled event once its publish was acknowledged.
func (s Spool) Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Quarantine moves a spooled file that can never be published (it does not
// decode) to Dir/bad, so a person can look at it and it stops blocking.
func (s Spool) Quarantine(path string) (string, error) {
	dir := filepath.Join(s.Dir, badDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(path))
	return dst, os.Rename(path, dst)
}

// TryLock takes the spool's drain lock without waiting. Parallel builds run
// parallel hooks; one drains while the others just publish their own event.
func (s Spool) TryLock() (unlock func(), ok bool) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, true
}
