package mirrorfill

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
)

// defaultStateFile is where replay records its progress for mirror name:
// $XDG_STATE_HOME/nix-ipfs/replay-NAME.seq, else
// ~/.local/state/nix-ipfs/replay-NAME.seq.
func defaultStateFile(getenv func(string) string, name string) (string, error) {
	dir := getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home := getenv("HOME")
		if home == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("no $XDG_STATE_HOME and no home directory for the state file: pass --state-file")
			}
			home = h
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "nix-ipfs", "replay-"+name+".seq"), nil
}

// ReadState returns the stream sequence recorded in the state file, and
// false if there is no file.
func ReadState(path string) (uint64, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("state file: %w", err)
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("state file %s: not a stream sequence number: %q", path, truncateStr(string(b), 40))
	}
	return seq, true, nil
}

// writeState records seq in the state file, atomically: an interrupted
// write leaves the previous value.
func writeState(path string, seq uint64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := atomicfile.WriteFile(path, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o644); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

func truncateStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// watermark tracks stream sequences handled out of order by concurrent
// workers and yields the highest sequence at and below which every
// delivered one is handled: where a resumed run can start without missing
// anything. A sequence that fails holds the mark below it, so a resumed run
// retries it (and skips the ones after it fast: they are pinned).
type watermark struct {
	mu      sync.Mutex
	pending []uint64 // delivered and not yet below the mark, in order
	handled map[uint64]bool
	mark    uint64
}

func newWatermark(mark uint64) *watermark {
	return &watermark{mark: mark, handled: map[uint64]bool{}}
}

// add records that seq was delivered; sequences arrive in increasing order.
func (w *watermark) add(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = append(w.pending, seq)
}

// done records that seq was handled for good, and returns the mark and
// whether it moved.
func (w *watermark) done(seq uint64) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handled[seq] = true
	moved := false
	for len(w.pending) > 0 && w.handled[w.pending[0]] {
		w.mark = w.pending[0]
		delete(w.handled, w.pending[0])
		w.pending = w.pending[1:]
		moved = true
	}
	return w.mark, moved
}

// value returns the mark.
func (w *watermark) value() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mark
}
