// Package mirror keeps copies of the published NARs on other IPFS nodes, so
// that host A can drop its own copy once enough of them hold one.
//
// The mirror worker (Worker) consumes "published" events with a durable
// consumer of its own ("mirror-NAME"), so every mirror gets every event.
// For each it dials the publishing node, pins the CID recursively, and acks
// only once the pin is complete; it then announces the copy with a "pinned"
// event on nixipfs.pinned.NAME. It unpins what prune retired, and pins the
// cache's root as a directory.
//
// The Pinner is what pins, verifies and confirms a NAR, whichever way it
// arrives: the worker, and the commands of package mirrorfill (replay,
// backfill), pin through it. Package retention/gc reads the confirmations
// to free host A.
//
// # What decides a retry
//
// A pin is bounded by a per-attempt timeout. Running into it is not a
// transient failure: a CID that no reachable node has would otherwise be
// retried for ever, so after MaxAttempts deliveries events.Consume
// dead-letters it as exhausted. A kubo that cannot be reached is transient
// and retried for as long as it takes; a CID whose bytes do not hash to the
// signed NarHash is corrupt, unpinned and dead-lettered at once.
package mirror
