package substituter

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// TestQuietIsProcessWide: a NAR whose warm waits its turn while blocks
// arrive for others does not make a fleet's client fall back to the
// mirrors; blocks stopping for a stall's time, for every NAR, does.
func TestQuietIsProcessWide(t *testing.T) {
	const stall = time.Second
	var calls atomic.Int32
	s := &Server{warm: &unixfs.Warmer{Stall: stall}, fallback: func() { calls.Add(1) }}
	stopA := s.watchQuiet(time.Now()) // this NAR gets nothing itself
	defer stopA()
	for end := time.Now().Add(3 * stall); time.Now().Before(end); time.Sleep(stall / 20) {
		s.lastBlock.Store(time.Now().UnixNano()) // another NAR's blocks
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("fell back %d times while blocks arrived for another NAR", n)
	}
	deadline := time.Now().Add(20 * stall)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(stall / 10)
	}
	if calls.Load() == 0 {
		t.Fatal("no fallback after blocks stopped for every NAR")
	}
}
