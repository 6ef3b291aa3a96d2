package mirror

import (
	"context"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
)

func runWorker(t *testing.T, js jetstream.JetStream, node *mirrortest.Node, name string, keep bool) (stop func()) {
	t.Helper()
	_, stop = startWorker(t, js, node, name, keep, 4, nil)
	return stop
}

// startWorker runs a Worker on the stream with concurrency handlers;
// setup, if set, adjusts it before it runs.
func startWorker(t *testing.T, js jetstream.JetStream, node *mirrortest.Node, name string, keep bool, concurrency int, setup func(*Worker)) (*Worker, func()) {
	t.Helper()
	w := NewWorker(NewPinner(node, PinnerOptions{Mirror: name, JS: js, PinTimeout: time.Minute}), WorkerOptions{
		JS: js,
		Consumer: events.ConsumerOptions{Durable: Durable(name), FilterSubjects: filterSubjects, Concurrency: concurrency,
			Backoff: []time.Duration{10 * time.Millisecond}},
		KeepRetired: keep,
	})
	if setup != nil {
		setup(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return w, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mirror: %v", err)
		}
	}
}

// TestMirrorUnpinsRetired: a mirror whose durable consumer predates
// retirement (it filtered "published" only) picks up "retired" events once
// restarted, and unpins those CIDs; one run with --keep-retired keeps them.
// A CID published again after its retirement ends pinned.
func TestMirrorUnpinsRetired(t *testing.T) {
	js := mirrortest.StreamJS(t)
	ctx := context.Background()
	// The consumer as an older mirror created it.
	if _, err := js.CreateOrUpdateConsumer(ctx, events.DefaultStream, jetstream.ConsumerConfig{
		Durable: Durable("b"), FilterSubject: events.SubjectPublished, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	node, archive := mirrortest.NewNode(), mirrortest.NewNode()
	var cids []cid.Cid
	var datas [][]byte
	for _, n := range []string{"keep", "gone", "back"} {
		d := []byte("nar of " + n)
		c := node.Add(d)
		archive.Add(d)
		cids, datas = append(cids, c), append(datas, d)
		if _, err := events.Publish(ctx, js, events.SubjectPublished, mirrortest.Published(n, c, d)); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []string{"gone", "back"} {
		if _, err := events.Publish(ctx, js, events.SubjectRetired, mirrortest.Retired(n, cids[i+1], datas[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	mirrortest.PublishRaw(t, js, events.SubjectPublished, mirrortest.Published("back", cids[2], datas[2]))

	stopB := runWorker(t, js, node, "b", false)
	stopArchive := runWorker(t, js, archive, "archive", true)
	defer stopB()
	defer stopArchive()
	testenv.Eventually(t, 20*time.Second, "mirrors drained", func() bool {
		for _, d := range []string{Durable("b"), Durable("archive")} {
			c, err := js.Consumer(ctx, events.DefaultStream, d)
			if err != nil {
				return false
			}
			info, err := c.Info(ctx)
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
		}
		return true
	})
	if !node.Pinned(cids[0].String()) || node.Pinned(cids[1].String()) || !node.Pinned(cids[2].String()) {
		t.Errorf("mirror b pins: keep %v (want true), gone %v (want false), back %v (want true, published again)",
			node.Pinned(cids[0].String()), node.Pinned(cids[1].String()), node.Pinned(cids[2].String()))
	}
	for i, c := range cids {
		if !archive.Pinned(c.String()) {
			t.Errorf("--keep-retired mirror let go of CID %d", i)
		}
	}
}
