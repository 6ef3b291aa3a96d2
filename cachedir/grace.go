package cachedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// The grace handshake.
//
// The publisher and prune share the cache directory without a lock (they
// may run on different schedules, prune as a one-shot command). What keeps
// prune from removing a path a publish is writing or relying on right now
// is the files' modification times and a grace period (prune --grace):
//
//   - The publisher's half. Every NAR and narinfo it writes is a file it
//     just wrote (a temp file renamed into place), so its modification
//     time is now. And before it relies on a path already in the cache (a
//     closure being published that reuses it), it Claims the narinfo:
//     refreshes its modification time, and publishes the path again if
//     the narinfo is gone.
//
//   - Prune's half. Withdraw moves a narinfo out of the cache only if it
//     is not Fresh, and checks again after the move: a narinfo the
//     publisher Claimed between the check and the move is put back. A
//     Claim after the move finds no narinfo, and the publisher publishes
//     the path again. WithdrawNAR does the same with the NAR, which a
//     publish of the same bytes renames into place afresh.
//
// So whatever the interleaving, a path the publisher wrote or Claimed
// within grace stays in the cache, or the publisher knows it is gone.
// With grace 0 nothing is fresh and the handshake protects nothing.

// Fresh reports whether a file last modified at modTime is within grace:
// written or Claimed by a publisher recently enough that prune spares it.
func Fresh(modTime time.Time, grace time.Duration) bool {
	return grace > 0 && time.Since(modTime) < grace
}

// Claim is the publisher's half of the grace handshake: it refreshes the
// modification time of the narinfo of hashPart and reports whether it is
// still there. The publisher Claims a narinfo it finds present before it
// relies on it, so that prune spares a path a closure being published
// right now reuses; a narinfo prune took away meanwhile reads as absent,
// and the path is published again.
//
// The narinfo is looked at again after the touch: utimensat finds the file
// by its name, then sets its times, and a prune may rename the file in
// between and find it still old after the move. The touch then lands on
// the file in the journal, and only this second look tells the publisher
// the path is gone. A file that is still there after the touch had its new
// time when prune moved it, so prune puts it back.
func (c Cache) Claim(hashPart string) bool {
	p := c.NarInfoPath(hashPart)
	now := time.Now()
	if err := os.Chtimes(p, now, now); errors.Is(err, fs.ErrNotExist) {
		return false
	}
	hook("claimed")
	_, err := os.Lstat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

// Withdrawal is what Withdraw did with a narinfo.
type Withdrawal int

const (
	// Gone: there was no narinfo (removed meanwhile).
	Gone Withdrawal = iota
	// Spared: the narinfo is Fresh, and stays.
	Spared
	// Reclaimed: the publisher Claimed the narinfo while it was being
	// moved out; it was put back and stays.
	Reclaimed
	// Withdrawn: the narinfo is in the journal, out of what the cache
	// serves.
	Withdrawn
)

func (w Withdrawal) String() string {
	switch w {
	case Gone:
		return "gone"
	case Spared:
		return "spared"
	case Reclaimed:
		return "reclaimed"
	case Withdrawn:
		return "withdrawn"
	}
	return fmt.Sprintf("Withdrawal(%d)", int(w))
}

// testHook, if set, runs between a check of a file's freshness and its
// move: the moment a concurrent Claim or publish must not be lost.
var testHook func(stage string)

func hook(stage string) {
	if testHook != nil {
		testHook(stage)
	}
}

// journalPath is where name (a narinfo's or NAR's file name) lives in the
// journal.
func (c Cache) journalPath(name string) string {
	return filepath.Join(c.path(JournalDir), name)
}

// Withdraw is prune's half of the grace handshake for a narinfo: it moves
// the narinfo of hashPart from the cache into the journal (JournalDir),
// unless it is Fresh, and puts it back if it turns out Fresh after the
// move (Claimed in between). The caller syncs the cache directory and the
// journal before removing the NAR.
func (c Cache) Withdraw(hashPart string, grace time.Duration) (Withdrawal, error) {
	cp := c.NarInfoPath(hashPart)
	jp := c.journalPath(NarInfoName(hashPart))
	fi, err := os.Lstat(cp)
	if errors.Is(err, fs.ErrNotExist) {
		return Gone, nil
	}
	if err != nil {
		return Gone, err
	}
	if Fresh(fi.ModTime(), grace) {
		return Spared, nil
	}
	hook("narinfo")
	if err := os.Rename(cp, jp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Gone, nil
		}
		return Gone, err
	}
	// Claim refreshes a narinfo before the publisher relies on it: one
	// refreshed between the check above and the rename goes back. (One
	// refreshed after the rename is gone for the publisher, which then
	// publishes the path again.)
	if grace > 0 {
		if fi, err := os.Lstat(jp); err == nil && Fresh(fi.ModTime(), grace) {
			if err := c.Restore(hashPart); err != nil {
				return Gone, err
			}
			return Reclaimed, nil
		}
	}
	return Withdrawn, nil
}

// Restore moves the narinfo of hashPart from the journal back into the
// cache (a retirement undone). A narinfo published again meanwhile wins.
func (c Cache) Restore(hashPart string) error {
	if err := storepath.ValidateHashPart(hashPart); err != nil {
		return fmt.Errorf("restore from the prune journal: %w", err)
	}
	jp := c.journalPath(NarInfoName(hashPart))
	if err := os.Link(jp, c.NarInfoPath(hashPart)); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("restore %s from the prune journal: %w", hashPart, err)
	}
	if err := os.Remove(jp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore %s: %w", hashPart, err)
	}
	return nil
}

// WithdrawNAR is prune's half of the grace handshake for a NAR whose
// narinfo is withdrawn already: it removes the NAR with URL url and
// reports its size, unless a publish of the same bytes put it in place
// again within grace. The NAR is moved into the journal first and checked
// there: if the publisher renamed the same NAR into place just before the
// move, the moved file is fresh and goes back; if just after, the moved
// file is the old one, and the new one stays.
func (c Cache) WithdrawNAR(url string, grace time.Duration) (size int64, removed bool, err error) {
	np := c.NarPath(url)
	if np == "" {
		return 0, false, fmt.Errorf("NAR %s: %w", url, CheckNarURL(url))
	}
	if grace <= 0 {
		// Nothing counts as fresh: no need to look before removing.
		fi, err := os.Lstat(np)
		if errors.Is(err, fs.ErrNotExist) {
			return 0, false, nil
		}
		if err == nil {
			err = os.Remove(np)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, false, fmt.Errorf("NAR %s: %w", url, err)
		}
		return fi.Size(), err == nil, nil
	}
	hook("nar")
	tp := c.journalPath(path.Base(url))
	if err := os.Rename(np, tp); errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("NAR %s: %w", url, err)
	}
	fi, err := os.Lstat(tp)
	if err != nil {
		return 0, false, fmt.Errorf("NAR %s: %w", url, err)
	}
	if Fresh(fi.ModTime(), grace) {
		if err := os.Rename(tp, np); err != nil {
			return 0, false, fmt.Errorf("put NAR %s back: %w", url, err)
		}
		return 0, false, nil
	}
	if err := os.Remove(tp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, false, fmt.Errorf("NAR %s: %w", url, err)
	}
	return fi.Size(), true, nil
}

// PutBackNAR finishes what an interrupted WithdrawNAR left in the journal
// under name: back into nar/ if no NAR of that name is there, else (the
// same bytes, published again) dropped.
func (c Cache) PutBackNAR(name string) error {
	if err := CheckNarURL(NarDirName + "/" + name); err != nil {
		return fmt.Errorf("put NAR back from the prune journal: %w", err)
	}
	jp, np := c.journalPath(name), filepath.Join(c.NarDir(), name)
	if _, err := os.Lstat(np); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(jp, np); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("put NAR %s back from the prune journal: %w", name, err)
		}
	} else {
		_ = os.Remove(jp)
	}
	return nil
}

// RemoveOldNAR removes the NAR with URL url (one no narinfo names) if it
// was not written for age, and reports its size.
func (c Cache) RemoveOldNAR(url string, age time.Duration) (int64, bool) {
	np := c.NarPath(url)
	if np == "" {
		return 0, false
	}
	fi, err := os.Lstat(np)
	if err != nil || time.Since(fi.ModTime()) < age {
		return 0, false
	}
	if err := os.Remove(np); err != nil {
		return 0, false
	}
	return fi.Size(), true
}

// DropJournalNarInfo forgets the journal's narinfo of hashPart (its
// retirement finished, or the path is back in the cache).
func (c Cache) DropJournalNarInfo(hashPart string) error {
	if storepath.ValidateHashPart(hashPart) != nil {
		return nil // no such entry
	}
	if err := os.Remove(c.journalPath(NarInfoName(hashPart))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("prune journal: %w", err)
	}
	return nil
}

// ForgetAnnounced removes the publisher's mark for hashPart (a retired
// path): published again, it is announced again.
func (c Cache) ForgetAnnounced(hashPart string) {
	_ = os.Remove(c.announcedPath(hashPart))
}
