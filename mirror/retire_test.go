package mirror

import (
	"context"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

func retiredEv(name string, c cid.Cid, data []byte) *events.Retired {
	ev := &events.Retired{Host: "a", StoreDir: "/nix/store", StorePath: storePath(name), NarHash: nixHash(data),
		NarSize: int64(len(data)), CID: c.String(), Reason: "test"}
	events.Seal(ev)
	return ev
}

// publishRaw puts e on the stream without a Nats-Msg-Id, so that a second
// publish of the same fact is stored again (as after the dedup window).
func publishRaw(t *testing.T, js jetstream.JetStream, subject string, e events.Event) {
	t.Helper()
	data, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
}

func runWorker(t *testing.T, js jetstream.JetStream, node *fakeNode, name string, keep bool) (stop func()) {
	t.Helper()
	w := &Worker{
		Pinner: NewPinner(node, PinnerOptions{Mirror: name, JS: js, PinTimeout: time.Minute}),
		JS:     js,
		Consumer: events.ConsumerOptions{Durable: Durable(name), FilterSubjects: FilterSubjects, Concurrency: 4,
			Backoff: []time.Duration{10 * time.Millisecond}},
		KeepRetired: keep,
		order:       newCIDOrder(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
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
	js := streamJS(t)
	ctx := context.Background()
	// The consumer as an older mirror created it.
	if _, err := js.CreateOrUpdateConsumer(ctx, events.DefaultStream, jetstream.ConsumerConfig{
		Durable: Durable("b"), FilterSubject: events.SubjectPublished, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	node, archive := newFakeNode(), newFakeNode()
	var cids []cid.Cid
	var datas [][]byte
	for _, n := range []string{"keep", "gone", "back"} {
		d := []byte("nar of " + n)
		c := node.add(d)
		archive.add(d)
		cids, datas = append(cids, c), append(datas, d)
		if _, err := events.Publish(ctx, js, events.SubjectPublished, published(n, c, d)); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []string{"gone", "back"} {
		if _, err := events.Publish(ctx, js, events.SubjectRetired, retiredEv(n, cids[i+1], datas[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	publishRaw(t, js, events.SubjectPublished, published("back", cids[2], datas[2]))

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
	if !node.pinned(cids[0].String()) || node.pinned(cids[1].String()) || !node.pinned(cids[2].String()) {
		t.Errorf("mirror b pins: keep %v (want true), gone %v (want false), back %v (want true, published again)",
			node.pinned(cids[0].String()), node.pinned(cids[1].String()), node.pinned(cids[2].String()))
	}
	for i, c := range cids {
		if !archive.pinned(c.String()) {
			t.Errorf("--keep-retired mirror let go of CID %d", i)
		}
	}
}

// TestReplaySkipsRetired: replay does not pin a CID the stream retired
// after publishing it, but does pin one published again after that.
func TestReplaySkipsRetired(t *testing.T) {
	js := streamJS(t)
	ctx := context.Background()
	node := newFakeNode()
	var cids []cid.Cid
	for _, n := range []string{"kept", "retired", "republished"} {
		d := []byte("nar of " + n)
		c := node.add(d)
		cids = append(cids, c)
		if _, err := events.Publish(ctx, js, events.SubjectPublished, published(n, c, d)); err != nil {
			t.Fatal(err)
		}
		if n != "kept" {
			if _, err := events.Publish(ctx, js, events.SubjectRetired, retiredEv(n, c, d)); err != nil {
				t.Fatal(err)
			}
		}
		if n == "republished" {
			publishRaw(t, js, events.SubjectPublished, published(n, c, d))
		}
	}
	p := NewPinner(node, PinnerOptions{PinTimeout: time.Minute})
	sum, err := Replay(ctx, js, p, ReplayOptions{Pin: PinConfig{Concurrency: 2, MaxAttempts: 1, Backoff: Backoff{time.Millisecond}, PinTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, false, true}
	for i, c := range cids {
		if node.pinned(c.String()) != want[i] {
			t.Errorf("CID %d pinned %v, want %v", i, node.pinned(c.String()), want[i])
		}
	}
	if sum.Skipped != 2 || sum.Pinned != 2 {
		t.Errorf("tally %+v: want 2 pinned (kept, republished) and 2 skipped (retired, republished's first publish)", sum.Tally)
	}
}
