package announce

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestRetired: more paths than one window, each announced once on the
// stream as a valid "retired" event; a path whose event cannot be valid
// gets its own error and takes no other path with it.
func TestRetired(t *testing.T) {
	ctx := context.Background()
	nats := testenv.StartNATS(t)
	_, js := nats.Connect(t)
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	n := 2*Window + 7
	paths := make([]Path, n)
	for i := range paths {
		paths[i] = Path{StorePath: synthcache.StorePath("announce", fmt.Sprintf("p%d", i)),
			NarHash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", NarSize: 64,
			CID: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", Reason: strings.Repeat("why ", 300)}
	}
	bad := Window + 3
	paths[bad].StorePath = "/etc/passwd"
	errsOf := Retired(ctx, js, "a", paths)
	for i, err := range errsOf {
		if (err != nil) != (i == bad) {
			t.Errorf("path %d: error %v", i, err)
		}
	}
	if errsOf[bad] == nil || !strings.Contains(errsOf[bad].Error(), "/etc/passwd") {
		t.Errorf("the bad path's error does not name it: %v", errsOf[bad])
	}
	cons, err := js.OrderedConsumer(ctx, events.DefaultStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectRetired}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < n-1 {
		msg, err := cons.Next()
		if err != nil {
			t.Fatalf("after %d events: %v", len(seen), err)
		}
		ev, err := events.Decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		r := ev.(*events.Retired)
		if seen[r.StorePath] {
			t.Errorf("%s announced twice", r.StorePath)
		}
		seen[r.StorePath] = true
		if len(r.Reason) != 1003 {
			t.Errorf("reason of %d bytes, want cut to 1,000 and an ellipsis", len(r.Reason))
		}
	}
	if info, err := cons.Info(ctx); err == nil && info.NumPending != 0 {
		t.Errorf("%d more events than paths", info.NumPending)
	}
}
