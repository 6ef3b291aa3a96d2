package publisher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// Locker keeps two publishers from publishing one path at the same time.
// Lock returns an error of kind Transient when another publisher holds the
// path: the event is retried a little later and then finds the path done.
type Locker interface {
	Lock(ctx context.Context, key string) (unlock func(), err error)
}

// KVLocker holds leases in a JetStream key-value bucket, so publishers on
// different hosts that share a cache (and a NATS) see each other. A lease
// is refreshed while held and expires with the bucket's TTL if its holder
// dies, so a crash never leaves a path locked for good.
type KVLocker struct {
	KV    jetstream.KeyValue
	Owner string
	TTL   time.Duration
	Log   *zap.Logger
}

// LockBucket is the key-value bucket that holds publish leases.
const LockBucket = "nixipfs_publish_locks"

// NewKVLocker creates or opens the lock bucket.
func NewKVLocker(ctx context.Context, js jetstream.JetStream, owner string, ttl time.Duration, log *zap.Logger) (*KVLocker, error) {
	if ttl <= 0 {
		ttl = 2 * time.Minute
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LockBucket,
		Description: "nix-ipfs publisher leases, one per store path hash being published",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("lock bucket %s: %w", LockBucket, err))
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &KVLocker{KV: kv, Owner: owner, TTL: ttl, Log: log}, nil
}

// Lock takes the lease on key or fails at once if another holder has it.
func (l *KVLocker) Lock(ctx context.Context, key string) (func(), error) {
	rev, err := l.KV.Create(ctx, key, []byte(l.Owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		holder := "another publisher"
		if e, gerr := l.KV.Get(ctx, key); gerr == nil {
			holder = string(e.Value())
		}
		return nil, errs.Errorf(errs.Transient, "being published by %s", holder)
	}
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("lease %s: %w", key, err))
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.TTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r, err := l.KV.Update(context.Background(), key, []byte(l.Owner), rev)
				if err != nil {
					l.Log.Warn("cannot refresh publish lease", zap.String("key", key), zap.Error(err))
					continue
				}
				rev = r
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Purge rather than delete: the key must be free for Create again.
		if err := l.KV.Purge(ctx, key, jetstream.LastRevision(rev)); err != nil {
			l.Log.Warn("cannot release publish lease; it expires by itself", zap.String("key", key), zap.Error(err))
		}
	}, nil
}
