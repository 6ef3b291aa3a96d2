package atomicfile

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteBehind: writes in pieces of any size start writeback at every
// interval boundary they cross, and the committed file holds every byte.
func TestWriteBehind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nar")
	f, err := Create(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	f.WriteBehind(1 << 20)
	data := make([]byte, 5<<20+123)
	rng := rand.New(rand.NewSource(1))
	rng.Read(data)
	starts := 0
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.Intn(300<<10))
		before := f.flushed
		if _, err := f.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		if f.flushed != before {
			starts++
			if f.flushed != f.written || f.flushed-before < 1<<20 {
				t.Fatalf("writeback started at %d after %d (last at %d)", f.flushed, f.written, before)
			}
		}
		rest = rest[n:]
	}
	// Each start follows at least 1 MiB and at most 1 MiB + one piece.
	if lo, hi := len(data)/(1<<20+300<<10), len(data)/(1<<20); starts < lo || starts > hi {
		t.Errorf("writeback started %d times over %d bytes, want %d to %d", starts, len(data), lo, hi)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("committed file: %d bytes (%v), want the %d written", len(got), err, len(data))
	}
}
