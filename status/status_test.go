package status

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

func TestCollect(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, p := range []string{
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-a", "/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-b",
	} {
		ev := &events.Built{Host: "h", StoreDir: "/nix/store", OutPaths: []string{p}}
		ev.Time = time.Unix(int64(i), 0)
		events.Seal(ev)
		if _, err := events.Publish(ctx, js, events.SubjectBuilt, ev); err != nil {
			t.Fatal(err)
		}
	}
	// A built event from Hydra that the handler refuses: status names its job.
	hev := &events.Built{Host: "hydra", StoreDir: "/nix/store", OutPaths: []string{"/nix/store/2c9p07z77phvv2hf6gm9f28syp39f1ag-c"},
		Job: "nixpkgs:trunk:hello.x86_64-linux", HydraBuild: 4711}
	events.Seal(hev)
	if _, err := events.Publish(ctx, js, events.SubjectBuilt, hev); err != nil {
		t.Fatal(err)
	}
	js.Publish(ctx, events.SubjectBuilt, []byte("garbage"))
	// A publisher consumer that dead-letters the garbage and handles nothing
	// else, and a mirror consumer that never ran: its lag is everything.
	o := events.ConsumerOptions{Durable: "publisher", FilterSubject: events.SubjectBuilt}
	if _, err := js.CreateOrUpdateConsumer(ctx, events.DefaultStream, (events.ConsumerOptions{Durable: "mirror-b", FilterSubject: events.SubjectPublished}).ConsumerConfig()); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	handled := make(chan struct{}, 10)
	go func() {
		done <- events.Consume(cctx, js, o, func(ctx context.Context, d events.Delivery) error {
			handled <- struct{}{}
			if b, ok := d.Event.(*events.Built); ok && b.Job != "" {
				return errs.Errorf(errs.Invalid, "refused for the test")
			}
			return nil
		})
	}()
	<-handled
	<-handled
	<-handled
	var r *Report
	testenv.Eventually(t, 10*time.Second, "dead letter", func() bool {
		var err error
		r, err = Collect(ctx, js, events.DefaultStream, 5)
		return err == nil && r.DeadLetters == 2
	})
	cancel()
	<-done
	if r.Subjects[events.SubjectBuilt] != 4 || len(r.LastDead) != 2 || r.LastDead[0].Kind != "invalid" {
		t.Errorf("report %+v", r)
	}
	roles := map[string]string{}
	for _, c := range r.Consumers {
		roles[c.Name] = c.Role
	}
	if roles["publisher"] != "publisher" || roles["mirror-b"] != "mirror" {
		t.Errorf("consumers %+v", r.Consumers)
	}
	// One server: R1 everywhere, no cluster. Consume gave its durable the
	// stream's replicas.
	if r.Replicas != 1 || r.Cluster != nil {
		t.Errorf("single server: replicas %d, cluster %+v", r.Replicas, r.Cluster)
	}
	for _, c := range r.Consumers {
		if c.Name == "publisher" && c.Replicas != 1 {
			t.Errorf("publisher consumer replicas %d, want the stream's 1", c.Replicas)
		}
	}
	var text, js2 bytes.Buffer
	r.WriteText(&text)
	if err := r.WriteJSON(&js2); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dead letters: 2", "mirror-b", "invalid", "job nixpkgs:trunk:hello.x86_64-linux (Hydra build 4711)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}

// TestClusterText: the text report names the leader and every lagging
// peer with why, and a leaderless group says so.
func TestClusterText(t *testing.T) {
	r := &Report{Stream: "NIXIPFS", Replicas: 3, Cluster: &Cluster{Name: "c", Leader: "n1", Peers: []Peer{
		{Name: "n2", Current: true, Active: 100 * time.Millisecond},
		{Name: "n3", Offline: true, Active: 31 * time.Second},
	}}, Consumers: []Consumer{{Name: "publisher", Role: "publisher", Replicas: 3, Cluster: &Cluster{Leader: "n2"}}}}
	var b bytes.Buffer
	r.WriteText(&b)
	for _, want := range []string{"replicas 3, leader n1, lagging: n3 (offline, seen 31s ago)", "3, leader n2"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	if l := r.Cluster.Lagging(); len(l) != 1 || l[0].Name != "n3" {
		t.Errorf("lagging = %+v", l)
	}
	r.Cluster = &Cluster{Peers: []Peer{{Name: "n2", Current: true}, {Name: "n3", Current: false, Lag: 7}}}
	b.Reset()
	r.WriteText(&b)
	for _, want := range []string{"leader NONE", "n3 (7 behind"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	// Not clustered: no cluster line beyond the replicas.
	r.Cluster, r.Replicas = nil, 1
	b.Reset()
	r.WriteText(&b)
	if !strings.Contains(b.String(), "replicas 1\n") {
		t.Errorf("single server text:\n%s", b.String())
	}
}
