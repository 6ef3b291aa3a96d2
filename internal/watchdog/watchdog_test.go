package watchdog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestFiresOnlyWithoutProgress: reads keep it from firing; a pause longer
// than d fires it, with ErrStalled as the cause; Stop is not a stall.
func TestFiresOnlyWithoutProgress(t *testing.T) {
	w := New(context.Background(), 200*time.Millisecond)
	defer w.Stop()
	r := w.Reader(strings.NewReader(strings.Repeat("x", 10)))
	b := make([]byte, 1)
	for i := 0; i < 5; i++ {
		time.Sleep(50 * time.Millisecond)
		r.Read(b)
	}
	if w.Stalled() {
		t.Fatal("fired while reads made progress")
	}
	<-w.Context().Done()
	if !w.Stalled() || !errors.Is(context.Cause(w.Context()), ErrStalled) {
		t.Fatalf("cause %v, want ErrStalled", context.Cause(w.Context()))
	}
	s := New(context.Background(), time.Hour)
	s.Stop()
	if s.Context().Err() == nil || s.Stalled() {
		t.Fatal("Stop: context not cancelled, or taken for a stall")
	}
}
