package events_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestReplicasFollowTheStream: on one server everything is R1; a bucket
// asked for more replicas than the server can hold is refused with the
// count in the error, and a missing stream counts as R1. (Three real
// servers and an R3 stream: integration TestFaultNATSCluster.)
func TestReplicasFollowTheStream(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if r, err := events.StreamReplicas(ctx, js, "MISSING"); err != nil || r != 1 {
		t.Fatalf("missing stream: %d, %v", r, err)
	}
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if r, err := events.StreamReplicas(ctx, js, ""); err != nil || r != 1 {
		t.Fatalf("stream replicas %d, %v", r, err)
	}
	kv, err := events.EnsureKeyValue(ctx, js, events.DefaultStream, jetstream.KeyValueConfig{Bucket: "test_bucket"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 1 {
		t.Errorf("bucket replicas %d, want the stream's 1", r)
	}
	_, err = events.EnsureKeyValue(ctx, js, events.DefaultStream, jetstream.KeyValueConfig{Bucket: "test_r3", Replicas: 3})
	if err == nil {
		t.Fatal("an R3 bucket on one server was created")
	}
	if want := "key-value bucket test_r3 (R3)"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
}
