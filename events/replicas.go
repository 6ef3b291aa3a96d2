package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// StreamReplicas returns how many replicas the stream has on the server.
// Everything else the pipeline keeps in JetStream (durable consumers, KV
// buckets) takes the same number, so that it survives exactly the server
// losses the events survive: an R3 stream whose consumer state or publish
// leases lived on one server would lose them with that server. A missing
// stream counts as 1.
func StreamReplicas(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	if stream == "" {
		stream = DefaultStream
	}
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, errs.E(errs.Transient, fmt.Errorf("stream %s: %w", stream, err))
	}
	if r := s.CachedInfo().Config.Replicas; r > 0 {
		return r, nil
	}
	return 1, nil
}

// EnsureKeyValue creates the key-value bucket cfg describes, or updates an
// existing one to it, with the stream's replicas (StreamReplicas) unless
// cfg.Replicas is set. Every component that keeps state in a KV bucket
// (publish leases, pins) opens it through here.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Replicas == 0 {
		r, err := StreamReplicas(ctx, js, stream)
		if err != nil {
			return nil, err
		}
		cfg.Replicas = r
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("key-value bucket %s (R%d): %w", cfg.Bucket, cfg.Replicas, err))
	}
	return kv, nil
}
