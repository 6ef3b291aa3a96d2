package events_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

func deadLetters(t *testing.T, js jetstream.JetStream) []*events.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*events.DeadLetter
	err := events.Scan(ctx, js, events.DefaultStream, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectDeadPrefix + ">"}}}, func(m jetstream.Msg) error {
		e, err := events.Decode(m.Data())
		if err != nil {
			return err
		}
		dl, ok := e.(*events.DeadLetter)
		if !ok {
			return fmt.Errorf("a %s event on %s", events.Head(e).Type, m.Subject())
		}
		out = append(out, dl)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// run consumes until stop returns true or 30 s pass.
func run(t *testing.T, js jetstream.JetStream, o events.ConsumerOptions, h events.Handler, stop func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- events.Consume(ctx, js, o, h) }()
	testenv.Eventually(t, 30*time.Second, "consumer to finish its work", stop)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConsumeDeadLettersInvalidAndKeepsGoing(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{
		[]byte("not json"),
		[]byte(`{"type":"nixipfs.built.v1","id":"x"}`),
		[]byte(`{"type":"nixipfs.built.v7"}`),
	}
	for _, b := range bad {
		if _, err := js.Publish(ctx, events.SubjectBuilt, b); err != nil {
			t.Fatal(err)
		}
	}
	good := samples()[0]
	if _, err := events.Publish(ctx, js, events.SubjectBuilt, good); err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int32
	run(t, js, events.ConsumerOptions{Durable: "t", FilterSubject: events.SubjectBuilt},
		func(ctx context.Context, d events.Delivery) error {
			if events.Head(d.Event).ID != events.Head(good).ID {
				t.Errorf("handler got an event that should have been dead-lettered")
			}
			handled.Add(1)
			return nil
		}, func() bool { return handled.Load() == 1 && len(deadLetters(t, js)) == len(bad) })
	for _, dl := range deadLetters(t, js) {
		if dl.Kind != "invalid" || dl.Reason == "" || dl.Subject != events.SubjectBuilt || dl.Deliveries != 1 {
			t.Errorf("dead letter %+v", dl)
		}
	}
}

func TestConsumeRetriesTransientAndExhaustsOther(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	events.EnsureStream(ctx, js, events.StreamOptions{})
	all := samples()
	transient, other := all[0], all[1]
	events.Publish(ctx, js, events.SubjectBuilt, transient)
	events.Publish(ctx, js, events.SubjectPublished, other)

	var mu sync.Mutex
	tries := map[string]int{}
	acked := false
	run(t, js, events.ConsumerOptions{Durable: "t", FilterSubjects: []string{events.SubjectBuilt, events.SubjectPublished}, MaxAttempts: 3,
		Backoff: []time.Duration{10 * time.Millisecond}},
		func(ctx context.Context, d events.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			id := events.Head(d.Event).ID
			tries[id]++
			switch id {
			case events.Head(transient).ID:
				if tries[id] < 5 { // more than MaxAttempts: transient never exhausts
					return errs.E(errs.Transient, errors.New("kubo down"))
				}
				acked = true
				return nil
			default:
				return errors.New("something odd")
			}
		}, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return acked && len(deadLetters(t, js)) == 1
		})
	dl := deadLetters(t, js)[0]
	if dl.Kind != "exhausted" || dl.Subject != events.SubjectPublished || tries[events.Head(other).ID] != 3 {
		t.Errorf("dead letter %+v after %d tries", dl, tries[events.Head(other).ID])
	}
}

func TestConsumeShutdownLeavesUnfinishedForRedelivery(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	events.EnsureStream(ctx, js, events.StreamOptions{})
	ev := samples()[0]
	events.Publish(ctx, js, events.SubjectBuilt, ev)
	started := make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	o := events.ConsumerOptions{Durable: "t", FilterSubject: events.SubjectBuilt, ShutdownTimeout: 100 * time.Millisecond}
	go func() {
		done <- events.Consume(cctx, js, o, func(ctx context.Context, d events.Delivery) error {
			close(started)
			<-ctx.Done() // work that outlives the shutdown timeout
			return ctx.Err()
		})
	}()
	<-started
	cancel()
	<-done
	// A new consumer on the same durable gets the event again at once.
	var got atomic.Bool
	run(t, js, o, func(ctx context.Context, d events.Delivery) error { got.Store(true); return nil }, got.Load)
}

func TestEnsureStreamKeepsOperatorLimits(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: 48 * time.Hour, Update: true}); err != nil {
		t.Fatal(err)
	}
	// A component started with defaults leaves the limits alone...
	s, err := events.EnsureStream(ctx, js, events.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Info(ctx); info.Config.MaxAge != 48*time.Hour {
		t.Errorf("max age reset to %v by a component with default settings", info.Config.MaxAge)
	}
	// ...and one given limits explicitly applies them.
	s, err = events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Update: true})
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Info(ctx); info.Config.MaxAge != time.Hour {
		t.Errorf("max age %v, want 1h", info.Config.MaxAge)
	}
}

func TestConsumeReportsLag(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	events.EnsureStream(ctx, js, events.StreamOptions{})
	for _, e := range samples()[:2] {
		events.Publish(ctx, js, events.SubjectPublished, e)
	}
	var maxPending atomic.Uint64
	release := make(chan struct{})
	var handled atomic.Int32
	o := events.ConsumerOptions{Durable: "lag", FilterSubject: events.SubjectPublished, Concurrency: 1, LagInterval: 20 * time.Millisecond,
		OnLag: func(pending uint64, ackPending, redelivered int) {
			if pending+uint64(ackPending) > maxPending.Load() {
				maxPending.Store(pending + uint64(ackPending))
			}
		}}
	go func() { time.Sleep(300 * time.Millisecond); close(release) }()
	run(t, js, o, func(ctx context.Context, d events.Delivery) error {
		<-release // hold the first event so the backlog is visible
		handled.Add(1)
		return nil
	}, func() bool { return handled.Load() == 2 })
	if maxPending.Load() != 2 {
		t.Errorf("largest backlog reported %d, want 2", maxPending.Load())
	}
}

func TestConsumeReturnsWhenConnectionClosed(t *testing.T) {
	n := testenv.StartNATS(t)
	nc, js := n.Connect(t)
	events.EnsureStream(context.Background(), js, events.StreamOptions{})
	done := make(chan error, 1)
	go func() {
		done <- events.Consume(context.Background(), js, events.ConsumerOptions{Durable: "c", FilterSubject: events.SubjectBuilt},
			func(context.Context, events.Delivery) error { return nil })
	}()
	time.Sleep(200 * time.Millisecond)
	nc.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Consume returned nil on a closed connection")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Consume kept going on a closed connection")
	}
}

// A misconfigured deployment (kind Config) stops the consumer with the
// operator's message; the event is neither acked nor dead-lettered, and a
// worker started after the fix handles it.
func TestConsumeStopsOnConfigError(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := samples()[0]
	if _, err := events.Publish(ctx, js, events.SubjectBuilt, ev); err != nil {
		t.Fatal(err)
	}
	o := events.ConsumerOptions{Durable: "t", FilterSubject: events.SubjectBuilt, MaxAttempts: 1,
		Backoff: []time.Duration{10 * time.Millisecond}}
	var calls atomic.Int32
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := events.Consume(cctx, js, o, func(ctx context.Context, d events.Delivery) error {
		calls.Add(1)
		return errs.Errorf(errs.Config, "kubo refuses our credentials")
	})
	if cctx.Err() != nil {
		t.Fatal("Consume did not stop on a Config error")
	}
	if !errs.Is(err, errs.Config) || !strings.Contains(err.Error(), "kubo refuses our credentials") {
		t.Fatalf("Consume = %v, want the Config error", err)
	}
	if dl := deadLetters(t, js); len(dl) != 0 {
		t.Fatalf("a Config error dead-lettered the event: %+v", dl[0])
	}
	var handled atomic.Bool
	run(t, js, o, func(ctx context.Context, d events.Delivery) error {
		handled.Store(events.Head(d.Event).ID == events.Head(ev).ID)
		return nil
	}, handled.Load)
	if calls.Load() < 1 {
		t.Fatal("handler never ran")
	}
}
