package roots

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// ReadBuilt adds to rs the roots of every "built" event in the stream.
// Events that do not decode are skipped: they name no outputs anyone can
// trust.
func ReadBuilt(ctx context.Context, js jetstream.JetStream, stream string, rs *Set) error {
	var mu sync.Mutex
	return readEvents(ctx, js, stream, events.SubjectBuilt, time.Time{}, func(ev events.Event) {
		if b, ok := ev.(*events.Built); ok {
			mu.Lock()
			rs.AddBuilt(b)
			mu.Unlock()
		}
	})
}

// ReadPublishedSince returns the store paths of the "published" events
// stored since the given time: paths published within the grace period,
// whatever their files' modification times say (a cache restored from a
// copy, a clock set back).
func ReadPublishedSince(ctx context.Context, js jetstream.JetStream, stream string, since time.Time) (map[string]bool, error) {
	out := map[string]bool{}
	var mu sync.Mutex
	err := readEvents(ctx, js, stream, events.SubjectPublished, since, func(ev events.Event) {
		if p, ok := ev.(*events.Published); ok {
			mu.Lock()
			out[p.StorePath] = true
			mu.Unlock()
		}
	})
	return out, err
}

// readEvents calls fn, from several goroutines, with every valid event on
// subject in the stream (those stored since since, if it is set) that the
// stream held when it began.
func readEvents(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, fn func(events.Event)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	// Decoding (a schema check per event) is the costly part: spread it
	// over the CPUs while the stream is read in order.
	data := make(chan []byte, 1024)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range data {
				if ev, err := events.Decode(d); err == nil {
					fn(ev)
				}
			}
		}()
	}
	err := events.Scan(ctx, js, stream, events.ScanOptions{Consumer: cfg, Batch: 512}, func(m jetstream.Msg) error {
		data <- m.Data()
		return nil
	})
	close(data)
	wg.Wait()
	if errs.Is(err, errs.Invalid) {
		return fmt.Errorf("%w: no roots to keep anything by (check --stream and --nats-url)", err)
	}
	return err
}
