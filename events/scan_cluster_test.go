package events_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// clusterScan is the scan under test in TestScanClusterMemberCatchingUp.
var clusterScan = events.Scan

// A member that has just come back holds only part of the stream while it
// catches up, and the cluster may place a reader on it: every scan must
// still return every message the leader held when it began.
func TestScanClusterMemberCatchingUp(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	_, js := c.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		t.Helper()
		payload := strings.Repeat("x", 1024)
		var acks []jetstream.PubAckFuture
		for i := 0; i < n; i++ {
			subject := events.SubjectPublished
			if i%3 == 2 {
				subject = events.SubjectPinned("b")
			}
			f, err := js.PublishAsync(subject, []byte(fmt.Sprintf("%d %s", i, payload)))
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
		}
		for i, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish %d: %v", i, err)
			case <-ctx.Done():
				t.Fatalf("publish %d: no ack", i)
			}
		}
	}
	publish(300)
	leader := c.StreamLeader(t, js, events.DefaultStream, time.Minute)
	var lag *testenv.NATSProc
	for _, p := range c.Nodes {
		if p != leader {
			lag = p
			break
		}
	}
	lag.Stop()
	publish(6000)
	s, err := js.Stream(ctx, events.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjectPublished))
	if err != nil {
		t.Fatal(err)
	}
	want := info.State.Subjects[events.SubjectPublished]
	lag.Start(t)

	// Many readers at once, at once: the cluster places each on a member
	// at random, so some land on the one catching up. Half start at
	// sequence 1, which leaves the first total to the reader's server: a
	// total below the leader's count shows a reader placed on the member
	// catching up.
	const rounds, readers = 3, 8
	var mu sync.Mutex
	short, lagging := 0, 0
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		for i := 0; i < readers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var got, last, total uint64
				cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPublished}, InactiveThreshold: 10 * time.Second}
				if i%2 == 1 {
					cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, 1
				}
				err := clusterScan(ctx, js, events.DefaultStream, events.ScanOptions{
					Consumer: cfg,
					OnTotal: func(n uint64) {
						if total == 0 {
							total = n
						}
					},
				}, func(m jetstream.Msg) error {
					meta, err := m.Metadata()
					if err != nil {
						return err
					}
					if meta.Sequence.Stream <= last {
						return fmt.Errorf("sequence %d after %d", meta.Sequence.Stream, last)
					}
					got, last = got+1, meta.Sequence.Stream
					return nil
				})
				mu.Lock()
				defer mu.Unlock()
				if total < want {
					lagging++
				}
				if err != nil {
					t.Errorf("round %d: scan: %v", r, err)
				} else if got != want {
					short++
					t.Errorf("round %d: a scan returned %d of the %d published messages (up to sequence %d)", r, got, want, last)
				}
			}()
		}
		wg.Wait()
	}
	t.Logf("%d scans of %d messages each: %d short, %d counted fewer at first (placed on the member catching up)",
		rounds*readers, want, short, lagging)
}
