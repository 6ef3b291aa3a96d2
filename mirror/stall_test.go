package mirror

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
)

// stallingNode reports pin progress as kubo does: its first stalls
// PinProgress calls fetch nothing until their context ends (a want a peer
// left unanswered), or, with failAfter set, fail with errPinFailed after
// that long; later ones report progress every tick for steps ticks, then
// pin.
type stallingNode struct {
	*mirrortest.Node
	stalls, steps   int
	tick, failAfter time.Duration

	mu    sync.Mutex
	calls int
	// returned is what each call returned, by call; running counts the
	// calls that have not returned, which a Pin must not leave behind.
	returned []error
	running  int
}

var errPinFailed = errors.New("kubo: pin failed")

func (n *stallingNode) PinProgress(ctx context.Context, c cid.Cid, name string, progress func()) (err error) {
	n.mu.Lock()
	n.calls++
	call := n.calls
	n.returned = append(n.returned, nil)
	n.running++
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.returned[call-1] = err
		n.running--
		n.mu.Unlock()
	}()
	if call <= n.stalls {
		if n.failAfter > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(n.failAfter):
				return errPinFailed
			}
		}
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

// TestPinAskedAgainAfterStall: the stall guard alone. PinHedge is off: with
// the default hedge (PinStall/2 here) the second request would be the hedge
// and only the third the guard's.
func TestPinAskedAgainAfterStall(t *testing.T) {
	node := &stallingNode{Node: mirrortest.NewNode(), stalls: 2, steps: 1, tick: time.Millisecond}
	data := []byte("held by a peer that never heard the want")
	it, _ := FromPublished(mirrortest.Published("stall", node.Add(data), data))
	r, err := NewPinner(node, PinnerOptions{PinStall: 50 * time.Millisecond, PinHedge: -1, PinTimeout: 10 * time.Second}).Pin(context.Background(), it)
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

// TestPinHedgedBesideAQuietRequest: a request that never moves gets a
// second one beside it after PinHedge, which pins at once (the blocks
// were local), and the first is cancelled and waited for; the stall
// guard, ten times longer, never fires.
func TestPinHedgedBesideAQuietRequest(t *testing.T) {
	node := &stallingNode{Node: mirrortest.NewNode(), stalls: 1}
	data := []byte("received already, counted as duplicates")
	it, _ := FromPublished(mirrortest.Published("hedge", node.Add(data), data))
	core, logs := observer.New(zap.InfoLevel)
	const hedge, stall = 200 * time.Millisecond, 2 * time.Second
	start := time.Now()
	r, err := NewPinner(node, PinnerOptions{PinHedge: hedge, PinStall: stall, PinTimeout: 10 * time.Second, Logger: zap.New(core)}).Pin(context.Background(), it)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("hedged pin: %v", err)
	}
	if !r.Fresh || node.calls != 2 {
		t.Errorf("fresh %v after %d requests; want a fresh pin by the second", r.Fresh, node.calls)
	}
	if took < hedge || took >= stall {
		t.Errorf("took %v; want the hedge's %v and less than the stall guard's %v", took, hedge, stall)
	}
	if node.running != 0 || !errors.Is(node.returned[0], context.Canceled) {
		t.Errorf("first request returned %v, %d requests still running; want it cancelled and returned", node.returned[0], node.running)
	}
	if n := logs.FilterMessageSnippet("stalled").Len(); n != 0 {
		t.Errorf("%d stall retries, want none", n)
	}
	for _, msg := range []string{"asking kubo a second time", "done by the second request"} {
		if n := logs.FilterMessageSnippet(msg).Len(); n != 1 {
			t.Errorf("%d logs %q, want 1", n, msg)
		}
	}
}

func TestPinMovingIsNotHedged(t *testing.T) {
	// 15 progress reports 20 ms apart: 300 ms in all, longer than the
	// hedge, but each gap well under it.
	node := &stallingNode{Node: mirrortest.NewNode(), steps: 15, tick: 20 * time.Millisecond}
	data := []byte("a pin still moving")
	it, _ := FromPublished(mirrortest.Published("moving", node.Add(data), data))
	if _, err := NewPinner(node, PinnerOptions{PinHedge: 200 * time.Millisecond, PinStall: 10 * time.Second, PinTimeout: 10 * time.Second}).Pin(context.Background(), it); err != nil {
		t.Fatal(err)
	}
	if node.calls != 1 {
		t.Errorf("%d requests for a pin that kept moving, want 1", node.calls)
	}
}

// TestPinStallGuardsTheHedgeToo: when the hedge hangs as well, the stall
// guard cancels both and asks again; that third request pins.
func TestPinStallGuardsTheHedgeToo(t *testing.T) {
	node := &stallingNode{Node: mirrortest.NewNode(), stalls: 2, steps: 1, tick: time.Millisecond}
	data := []byte("both requests wait")
	it, _ := FromPublished(mirrortest.Published("both", node.Add(data), data))
	core, logs := observer.New(zap.InfoLevel)
	_, err := NewPinner(node, PinnerOptions{PinHedge: 20 * time.Millisecond, PinStall: 100 * time.Millisecond, PinTimeout: 10 * time.Second, Logger: zap.New(core)}).Pin(context.Background(), it)
	if err != nil {
		t.Fatal(err)
	}
	hedges, stalls := logs.FilterMessageSnippet("asking kubo a second time").Len(), logs.FilterMessageSnippet("stalled").Len()
	if node.calls != 3 || hedges != 1 || stalls != 1 {
		t.Errorf("%d requests, %d hedges, %d stall retries; want 3, 1 and 1", node.calls, hedges, stalls)
	}
	if !errors.Is(node.returned[0], context.Canceled) || !errors.Is(node.returned[1], context.Canceled) {
		t.Errorf("hung requests returned %v and %v; want both cancelled", node.returned[0], node.returned[1])
	}
}

func TestPinHedgeBothFail(t *testing.T) {
	// The first fails at 300 ms, the hedge (at 100 ms) at 400 ms.
	node := &stallingNode{Node: mirrortest.NewNode(), stalls: 2, failAfter: 300 * time.Millisecond}
	data := []byte("no kubo wants it")
	it, _ := FromPublished(mirrortest.Published("fail", node.Add(data), data))
	start := time.Now()
	_, err := NewPinner(node, PinnerOptions{PinHedge: 100 * time.Millisecond, PinStall: 10 * time.Second, PinTimeout: 10 * time.Second}).Pin(context.Background(), it)
	if !errors.Is(err, errPinFailed) {
		t.Fatalf("error %v, want %v", err, errPinFailed)
	}
	if took := time.Since(start); node.calls != 2 || took < 400*time.Millisecond {
		t.Errorf("%d requests, failed after %v; want 2, the hedge waited for (400 ms)", node.calls, took)
	}
}

// TestPinHedgeOutlivesAFailedFirst: the first request failing does not end
// a hedge that is still moving.
func TestPinHedgeOutlivesAFailedFirst(t *testing.T) {
	// The hedge starts at 100 ms and pins at 400 ms; the first fails at 200.
	node := &stallingNode{Node: mirrortest.NewNode(), stalls: 1, failAfter: 200 * time.Millisecond, steps: 15, tick: 20 * time.Millisecond}
	data := []byte("the second request carries it")
	it, _ := FromPublished(mirrortest.Published("outlive", node.Add(data), data))
	r, err := NewPinner(node, PinnerOptions{PinHedge: 100 * time.Millisecond, PinStall: 10 * time.Second, PinTimeout: 10 * time.Second}).Pin(context.Background(), it)
	if err != nil {
		t.Fatalf("pin with the first request failed: %v", err)
	}
	if !r.Fresh || node.calls != 2 || !errors.Is(node.returned[0], errPinFailed) {
		t.Errorf("fresh %v, %d requests, first returned %v; want a fresh pin by the second after the first failed", r.Fresh, node.calls, node.returned[0])
	}
}
