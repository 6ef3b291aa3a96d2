package publisher

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/lease"
)

// Locker keeps two publishers from publishing one path at the same time
// (package lease has the one kept in NATS).
//
// Lock returns a context that is cancelled if the lease is lost while held
// (the holder then stops publishing), and a function that releases it.
// When another live publisher holds the path, Lock fails with an error that
// IsHeld recognises; the caller waits on its own short schedule and tries
// again, and then usually finds the path done.
type Locker interface {
	Lock(ctx context.Context, key, storePath string) (context.Context, func(), error)
}

var _ Locker = (*lease.KV)(nil)

// IsHeld reports whether err says another publisher holds the lease.
func IsHeld(err error) bool { return lease.IsHeld(err) }

// DefaultLockTTL is how long a lease outlives a holder that stopped
// refreshing it (lease.DefaultTTL).
const DefaultLockTTL = lease.DefaultTTL

// LockBucket is the key-value bucket that holds publish leases.
const LockBucket = lease.Bucket
