package mirror

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
)

// TestOrderForgetsSettledCIDs: a mirror that handles many distinct CIDs
// does not remember one sequence per CID for ever; what the consumer's
// ack floor shows settled is let go. (Before the order asked for the
// floor, it held one entry per CID ever handled: 200 here.)
func TestOrderForgetsSettledCIDs(t *testing.T) {
	js := mirrortest.StreamJS(t)
	node := mirrortest.NewNode()
	const n = 200
	var cids []string
	for i := 0; i < n; i++ {
		data := []byte(fmt.Sprintf("distinct nar %d", i))
		c := node.Add(data)
		cids = append(cids, c.String())
		if _, err := events.Publish(context.Background(), js, events.SubjectPublished, mirrortest.Published(fmt.Sprintf("d-%d", i), c, data)); err != nil {
			t.Fatal(err)
		}
	}
	w, stop := startWorker(t, js, node, "bounded", false, 8, func(w *Worker) {
		w.order.minPrune, w.order.pruneAt = 16, 16
	})
	defer stop()
	waitDrained(t, js, Durable("bounded"))
	for i, c := range cids {
		if !node.Pinned(c) {
			t.Fatalf("CID %d not pinned", i)
		}
	}
	if got := w.order.size(); got > 64 {
		t.Errorf("after %d distinct CIDs the order remembers %d; want at most 64 (what the ack floor has not settled, plus the slack before the next look)", n, got)
	}
}

// TestOrderDropsOnlySettled: an entry above the ack floor stays, so an
// older event about its CID handled late is still skipped; once the floor
// passes it, it goes.
func TestOrderDropsOnlySettled(t *testing.T) {
	var floor atomic.Uint64
	o := newCIDOrder(func(context.Context) (uint64, error) { return floor.Load(), nil }, nil)
	o.minPrune, o.pruneAt = 4, 4
	ctx := context.Background()
	run := func(c string, seq uint64) bool {
		t.Helper()
		ran, err := o.do(ctx, c, seq, func() error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return ran
	}
	// A republish of x at 20 handled while x's retirement at 15 is still
	// unsettled (the floor is 14).
	floor.Store(14)
	run("x", 20)
	seq := uint64(20)
	for i := 0; i < 40; i++ {
		seq++
		run(fmt.Sprint("c", i), seq)
	}
	if o.size() != 41 {
		t.Errorf("with nothing settled the order holds %d, want all 41", o.size())
	}
	if run("x", 15) {
		t.Error("the retirement older than x's republish ran")
	}
	// Everything up to 60 settles: the next look drops it, and only it.
	floor.Store(60)
	gone := func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		_, ok := o.last["x"]
		return !ok
	}
	for i := 0; i < 200 && !gone(); i++ {
		seq++
		run(fmt.Sprint("d", i), seq)
	}
	if !gone() {
		t.Fatal("x's entry is kept after the floor passed it")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for c, s := range o.last {
		if s <= 60 {
			t.Errorf("%s at %d kept below the floor", c, s)
		}
	}
	if n := len(o.last); n > 82 {
		t.Errorf("order holds %d after the floor passed 41 of its entries", n)
	}
}

// TestHandleConcurrently: a Worker made by NewWorker, without Run, handles
// events from many goroutines at once, as events.Consume calls it (run with
// -race): for each CID a
// publish, its retirement and a republish arrive in any order and the CID
// ends pinned; for a CID whose last event is its retirement, unpinned.
func TestHandleConcurrently(t *testing.T) {
	node := mirrortest.NewNode()
	w := NewWorker(NewPinner(node, PinnerOptions{PinTimeout: time.Minute}), WorkerOptions{})
	// Let the order look at a floor below every event while handlers run.
	w.order.floor = func(context.Context) (uint64, error) { return 0, nil }
	w.order.minPrune, w.order.pruneAt = 2, 2

	type delivery struct {
		ev  events.Event
		seq uint64
	}
	var ds []delivery
	var republished, retired []cid.Cid
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	for i := 0; i < 40; i++ {
		data := []byte(fmt.Sprintf("concurrent nar %d", i))
		name := fmt.Sprintf("cc-%d", i)
		c := node.Add(data)
		ds = append(ds, delivery{mirrortest.Published(name, c, data), next()}, delivery{mirrortest.Retired(name, c, data), next()})
		if i%2 == 0 {
			ds = append(ds, delivery{mirrortest.Published(name, c, data), next()})
			republished = append(republished, c)
		} else {
			retired = append(retired, c)
		}
	}
	rand.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			meta := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: d.seq}}
			if err := w.handle(context.Background(), events.Delivery{Event: d.ev, Meta: meta}); err != nil {
				t.Errorf("seq %d: %v", d.seq, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, c := range republished {
		if !node.Pinned(c.String()) {
			t.Errorf("%s, published again after its retirement, is not pinned", c)
		}
	}
	for _, c := range retired {
		if node.Pinned(c.String()) {
			t.Errorf("%s, retired last, is pinned", c)
		}
	}
}

// waitDrained waits until the durable consumer has nothing pending.
func waitDrained(t *testing.T, js jetstream.JetStream, durable string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, durable+" drained", func() bool {
		c, err := js.Consumer(context.Background(), events.DefaultStream, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}
