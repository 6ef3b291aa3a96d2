// Package mirror keeps copies of the published NARs on other IPFS nodes, and
// lets host A drop its own copy once enough of them hold one.
//
// Four things are built on one Pinner, so that a NAR is pinned, verified and
// confirmed the same way whichever way it arrives:
//
//   - the mirror worker (Worker) consumes "published" events with a durable
//     consumer of its own ("mirror-NAME"), so every mirror gets every event.
//     For each it dials the publishing node, pins the CID recursively, and
//     acks only once the pin is complete; it then announces the copy with a
//     "pinned" event on nixipfs.pinned.NAME.
//   - Replay re-pins a range of the stream's history onto one node, with
//     progress on a terminal and a state file to resume from.
//   - Backfill pins every IPFSHash of an existing cache's narinfos, for
//     caches filled before the pipeline ran.
//   - GC unpins from host A's node the CIDs that enough distinct mirror
//     nodes have confirmed, then runs kubo's garbage collection.
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
