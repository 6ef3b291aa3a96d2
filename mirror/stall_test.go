package mirror

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
)

// stallingNode reports pin progress as kubo does: its first stalls
// PinProgress calls fetch nothing until their context ends (a want a peer
// left unanswered); later ones report progress every tick for steps
// ticks, then pin.
type stallingNode struct {
	*mirrortest.Node
	stalls, steps int
	tick          time.Duration

	mu    sync.Mutex
	calls int
}

func (n *stallingNode) PinProgress(ctx context.Context, c cid.Cid, name string, progress func()) error {
	n.mu.Lock()
	n.calls++
	call := n.calls
	n.mu.Unlock()
	if call <= n.stalls {
		<-ctx.Done()
		return ctx.Err()
	}
	for range n.steps {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(n.tick):
			progress()
		}
	}
	return n.Node.Pin(ctx, c, name)
}

func TestPinAskedAgainAfterStall(t *testing.T) {
	node := &stallingNode{Node: mirrortest.NewNode(), stalls: 2, steps: 1, tick: time.Millisecond}
	data := []byte("held by a peer that never heard the want")
	it, _ := FromPublished(mirrortest.Published("stall", node.Add(data), data))
	r, err := NewPinner(node, PinnerOptions{PinStall: 50 * time.Millisecond, PinTimeout: 10 * time.Second}).Pin(context.Background(), it)
	if err != nil {
		t.Fatalf("pin after two stalls: %v", err)
	}
	if !r.Fresh || node.calls != 3 {
		t.Errorf("fresh %v after %d requests; want a fresh pin on the third", r.Fresh, node.calls)
	}
}

func TestPinMovingSlowlyIsNotAskedAgain(t *testing.T) {
	// 20 progress reports 20 ms apart: 400 ms in all, each gap well under
	// the 150 ms stall limit.
	node := &stallingNode{Node: mirrortest.NewNode(), steps: 20, tick: 20 * time.Millisecond}
	data := []byte("a slow but steady pin")
	it, _ := FromPublished(mirrortest.Published("slow", node.Add(data), data))
	if _, err := NewPinner(node, PinnerOptions{PinStall: 150 * time.Millisecond, PinTimeout: 10 * time.Second}).Pin(context.Background(), it); err != nil {
		t.Fatal(err)
	}
	if node.calls != 1 {
		t.Errorf("%d requests for a pin that kept moving, want 1", node.calls)
	}
}

func TestPinStallOffWaitsForTheTimeout(t *testing.T) {
	node := &stallingNode{Node: mirrortest.NewNode(), stalls: 1}
	data := []byte("x")
	it, _ := FromPublished(mirrortest.Published("off", node.Add(data), data))
	// PinStall negative: kubo's plain Pin, which the fake answers at once.
	if _, err := NewPinner(node, PinnerOptions{PinStall: -1}).Pin(context.Background(), it); err != nil {
		t.Fatal(err)
	}
	if node.calls != 0 || node.PinCalls != 1 {
		t.Errorf("PinProgress %d times, Pin %d times; want 0 and 1 with the stall guard off", node.calls, node.PinCalls)
	}
}
