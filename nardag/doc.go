// Package nardag builds the UnixFS DAG of a NAR in process, the way kubo's
// `ipfs add --cid-version=1` lays it out (raw leaves, SHA-256, a balanced
// DAG of 174 links per node), with kubo's chunkers or with the
// reference-aware chunker kubo does not have.
//
// The reference-aware chunker ("nix-refs-<gap>-<size>", Refs) cuts just
// before and just after every occurrence of a store path hash part the
// path names (its own and its references': the strings Nix's reference
// scanner looks for), joins occurrences less than gap bytes apart into one
// block, and cuts the bytes between them into fixed chunks of size bytes,
// restarted after each hash. A rebuild with new references changes a NAR
// mostly in those 32-byte strings, so an upgrade moves the few blocks that
// hold them instead of a whole chunk around each (docs/CHUNKING.md: 1.4%
// of a generation's new NAR bytes moved against 33% with buzhash).
//
// The result is an ordinary UnixFS file: every reader (the unixfs package,
// any kubo, any gateway) reads it unchanged. Only the name recorded with
// the CID (ipfs.Params.Chunker) says how it was cut.
package nardag
