// Package mirrorfill fills a mirror's IPFS node in one run, where the
// mirror worker (package mirror) follows the stream as it goes:
//
//   - Replay re-pins a range of the stream's history onto one node, with
//     progress on a terminal and a state file to resume from
//     (`nix-ipfs replay`).
//   - Backfill pins every IPFSHash of an existing cache's narinfos, for
//     caches filled before the pipeline ran (`nix-ipfs backfill`).
//
// Both pin with the mirror's Pinner, so a NAR is pinned, verified,
// announced and kept in the mirror's cache exactly as the worker does it;
// what they add is the batch: bounded concurrency, a few retries per item
// with backoff, a tally and a progress display.
package mirrorfill
