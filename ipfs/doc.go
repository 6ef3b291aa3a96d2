// Package ipfs is nix-ipfs's only door to kubo. It talks to a running kubo
// daemon over its RPC API (github.com/ipfs/kubo/client/rpc) and gives every
// failure a kind from internal/errs, so a worker knows whether to retry
// (daemon unreachable), give up (bad CID or parameters) or stop (the caller's
// context ended).
//
// # Why the import parameters are recorded
//
// A CID is a function of the bytes and of how they were cut into a DAG: CID
// version, chunker, raw leaves, hash function, DAG layout and file-node
// width. The same NAR added with other parameters gets another CID, so a
// CID published in a narinfo can only be checked, re-derived or re-added
// elsewhere if the parameters travel with it. Params carries them, and Add
// sends every one of them explicitly, because kubo otherwise fills the gaps
// from the daemon's Import.* configuration and two daemons configured
// differently would then publish different CIDs for the same bytes.
//
// # What Nocopy needs
//
// Nocopy adds through kubo's filestore: the daemon stores references to the
// file (absolute path and offsets) instead of a copy of its blocks, which
// halves the disk used for a cache of uncompressed NARs. It needs
//
//   - Experimental.FilestoreEnabled on the daemon;
//   - raw leaves (then, with CIDv1, the CID is the same as a copying add's);
//   - the file visible to the daemon at the same absolute path as to this
//     process (the same machine, or the same mount at the same place in a
//     container);
//   - that path under the parent directory of the daemon's IPFS_PATH (for
//     IPFS_PATH=/var/lib/ipfs/repo, somewhere under /var/lib/ipfs): kubo
//     refuses references anywhere else, so the NAR files to serve this way
//     must be written (and kept) there.
//
// The file must then stay unchanged for as long as the CID is served: kubo
// notices a modified file only when it reads a block, and fails that read.
// kubo does not open the file while it adds it (it reads the stream sent),
// so AddAt can stream a file's bytes before the file is in place, except
// for a file of one block: kubo reads its root, the leaf, back during the
// add.
package ipfs
