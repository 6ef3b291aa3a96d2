package events_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// scanStream starts an embedded server with the events stream and returns
// its JetStream context and stream.
func scanStream(t *testing.T) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := events.EnsureStream(ctx, js, events.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return js, s
}

// put publishes n messages on subject and returns their sequences. The
// payloads are not events: Scan does not decode.
func put(t *testing.T, js jetstream.JetStream, subject string, n int) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var seqs []uint64
	for i := 0; i < n; i++ {
		ack, err := js.Publish(ctx, subject, []byte(fmt.Sprintf("%s %d", subject, i)))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	return seqs
}

type scanned struct {
	seqs   []uint64
	totals []uint64
}

func runScan(t *testing.T, js jetstream.JetStream, o events.ScanOptions, each func(jetstream.Msg, int)) (scanned, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var r scanned
	o.OnTotal = func(n uint64) { r.totals = append(r.totals, n) }
	err := events.Scan(ctx, js, events.DefaultStream, o, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		r.seqs = append(r.seqs, meta.Sequence.Stream)
		if each != nil {
			each(m, len(r.seqs))
		}
		return nil
	})
	return r, err
}

func sameSeqs(t *testing.T, got, want []uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("scanned %d messages, want %d (first %v, last %v)", len(got), len(want), head(got), tailOf(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: sequence %d, want %d", i, got[i], want[i])
		}
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 5)] }
func tailOf(s []uint64) []uint64 {
	return s[max(0, len(s)-5):]
}

func TestScanReadsWhatWasThereAndNoMore(t *testing.T) {
	js, _ := scanStream(t)
	var want []uint64
	for i := 0; i < 5; i++ {
		want = append(want, put(t, js, events.SubjectPublished, 60)...)
		put(t, js, events.SubjectBuilt, 20)
	}
	o := events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPublished}}, Batch: 16}
	r, err := runScan(t, js, o, func(_ jetstream.Msg, n int) {
		if n == 1 {
			put(t, js, events.SubjectPublished, 10) // after the start: the next run's
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, r.seqs, want)
	if len(r.totals) != 1 || r.totals[0] != uint64(len(want)) {
		t.Errorf("totals %v, want [%d]", r.totals, len(want))
	}
}

func TestScanNothingSelected(t *testing.T) {
	js, _ := scanStream(t)
	published := events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPublished}}}
	r, err := runScan(t, js, published, nil) // an empty stream
	if err != nil || len(r.seqs) != 0 || len(r.totals) != 1 || r.totals[0] != 0 {
		t.Fatalf("empty stream: %d messages, totals %v, err %v; want none, [0], nil", len(r.seqs), r.totals, err)
	}
	seqs := put(t, js, events.SubjectBuilt, 10)
	if r, err = runScan(t, js, published, nil); err != nil || len(r.seqs) != 0 || r.totals[0] != 0 {
		t.Fatalf("no published events: %d messages, totals %v, err %v", len(r.seqs), r.totals, err)
	}
	// A start past the end selects nothing, at once.
	from := events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: seqs[len(seqs)-1] + 1}}
	if r, err = runScan(t, js, from, nil); err != nil || len(r.seqs) != 0 {
		t.Fatalf("from past the end: %d messages, err %v", len(r.seqs), err)
	}
}

func TestScanMissingStream(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	_, err := runScan(t, js, events.ScanOptions{}, nil)
	if !errs.Is(err, errs.Invalid) {
		t.Fatalf("err %v (%s), want an Invalid error", err, errs.KindOf(err))
	}
}

func TestScanFromSequenceAndTime(t *testing.T) {
	js, _ := scanStream(t)
	first := put(t, js, events.SubjectPublished, 40)
	put(t, js, events.SubjectBuilt, 5)
	time.Sleep(10 * time.Millisecond)
	since := time.Now()
	time.Sleep(10 * time.Millisecond)
	second := put(t, js, events.SubjectPublished, 60)
	filter := []string{events.SubjectPublished}

	r, err := runScan(t, js, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: filter,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first[20]}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, r.seqs, append(append([]uint64{}, first[20:]...), second...))

	r, err = runScan(t, js, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: filter,
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, r.seqs, second)

	later := time.Now().Add(time.Hour)
	r, err = runScan(t, js, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: filter,
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &later}}, nil)
	if err != nil || len(r.seqs) != 0 {
		t.Fatalf("from a time after the last event: %d messages, err %v", len(r.seqs), err)
	}

	_, err = runScan(t, js, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}}, nil)
	if !errs.Is(err, errs.Invalid) {
		t.Fatalf("deliver new: err %v, want an Invalid error", err)
	}
}

// A wildcard filter finds its end through the leader too, and so does a
// stream an operator set to allow direct gets (which any member answers).
func TestScanWildcardOnDirectGetStream(t *testing.T) {
	js, s := scanStream(t)
	cfg := s.CachedInfo().Config
	cfg.AllowDirect = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i := 0; i < 3; i++ {
		want = append(want, put(t, js, events.SubjectPinned("a"), 7)...)
		put(t, js, events.SubjectDeadPrefix+"x", 3)
		want = append(want, put(t, js, events.SubjectPinned("b"), 5)...)
	}
	put(t, js, events.SubjectBuilt, 4) // after the last pinned
	r, err := runScan(t, js, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectPinnedPrefix + ">"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, r.seqs, want)
	if r.totals[0] != uint64(len(want)) {
		t.Errorf("total %d, want %d", r.totals[0], len(want))
	}
}

// Messages removed while a scan runs are not waited for: not the last
// (deleted), not everything up to the end (purged as limits would).
func TestScanMessagesRemovedMeanwhile(t *testing.T) {
	// removeAtFirst publishes 200 events and scans them, pulling 8 at a
	// time; at the first, remove is given the stream and the sequences.
	removeAtFirst := func(t *testing.T, remove func(context.Context, jetstream.JetStream, jetstream.Stream, []uint64)) ([]uint64, []uint64) {
		js, s := scanStream(t)
		seqs := put(t, js, events.SubjectPublished, 200)
		o := events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPublished}},
			Batch: 8, Idle: 300 * time.Millisecond}
		r, err := runScan(t, js, o, func(_ jetstream.Msg, n int) {
			if n == 1 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				remove(ctx, js, s, seqs)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return seqs, r.seqs
	}
	// What the client had pulled before a purge still arrives.
	aPull := func(t *testing.T, got []uint64) {
		if len(got) == 0 || len(got) > 1+8+1 {
			t.Fatalf("scanned %d messages after a purge at the first, want the first and at most a pull's worth", len(got))
		}
	}
	t.Run("end deleted", func(t *testing.T) {
		seqs, got := removeAtFirst(t, func(ctx context.Context, _ jetstream.JetStream, s jetstream.Stream, seqs []uint64) {
			for _, q := range seqs[150:] {
				if err := s.DeleteMsg(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
		})
		sameSeqs(t, got, seqs[:150])
	})
	t.Run("all up to the end purged", func(t *testing.T) {
		seqs, got := removeAtFirst(t, func(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, _ []uint64) {
			later := put(t, js, events.SubjectPublished, 20)
			// The stream's first sequence moves past the scan's end.
			if err := s.Purge(ctx, jetstream.WithPurgeSequence(later[10])); err != nil {
				t.Fatal(err)
			}
		})
		aPull(t, got)
		for _, q := range got {
			if q > seqs[len(seqs)-1] {
				t.Fatalf("scanned sequence %d, published after the scan began (end %d)", q, seqs[len(seqs)-1])
			}
		}
	})
	t.Run("stream purged", func(t *testing.T) {
		_, got := removeAtFirst(t, func(ctx context.Context, _ jetstream.JetStream, s jetstream.Stream, _ []uint64) {
			if err := s.Purge(ctx); err != nil {
				t.Fatal(err)
			}
		})
		aPull(t, got)
	})
}

func TestScanStops(t *testing.T) {
	js, _ := scanStream(t)
	put(t, js, events.SubjectPublished, 50)
	o := events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPublished}}, Batch: 4}

	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := events.Scan(ctx, js, events.DefaultStream, o, func(jetstream.Msg) error {
		if n++; n == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 5 {
		t.Fatalf("cancelled at 5: err %v after %d messages, want context.Canceled right after the 5th", err, n)
	}

	stop := errors.New("enough")
	n = 0
	err = events.Scan(context.Background(), js, events.DefaultStream, o, func(jetstream.Msg) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("fn error at 3: err %v after %d messages", err, n)
	}
}

// A NATS that goes away mid-scan ends it with a transient error, not a
// hang.
func TestScanServerGoneIsTransient(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	put(t, js, events.SubjectPublished, 100)
	o := events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPublished}},
		Batch: 4, Idle: 300 * time.Millisecond, Stalls: 2}
	got := 0
	err := events.Scan(ctx, js, events.DefaultStream, o, func(jetstream.Msg) error {
		if got++; got == 1 {
			n.Stop()
		}
		return nil
	})
	if ctx.Err() != nil {
		t.Fatal("the scan hung until the test's deadline")
	}
	if !errs.Is(err, errs.Transient) {
		t.Fatalf("err %v (%s), want a Transient error", err, errs.KindOf(err))
	}
	t.Logf("after %d messages: %v", got, err)
}
