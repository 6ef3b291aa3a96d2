package unixfs

import (
	"context"
	"errors"
	"io"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Source gives blocks by CID.
type Source interface {
	// Block returns c's bytes, or an error with a kind: NotYet wrapping
	// ErrNotLocal for a block the source lacks, Corrupt wrapping
	// ErrBlockMismatch for bytes that do not hash to c.
	Block(ctx context.Context, c cid.Cid) ([]byte, error)
	// Checks says which blocks the source checks against their CIDs
	// itself, so that the reader hashes none twice and skips none it
	// should not.
	Checks() Check
	// String names the source, for messages.
	String() string
}

// Check is how far a source checks the blocks it returns.
type Check int

const (
	// CheckNone: the source returns whatever it holds; the reader checks
	// every block (kubo's RPC block/get: kubo does not re-hash what its
	// own store holds).
	CheckNone Check = iota
	// CheckedBySource: every block was checked by the source (a trustless
	// gateway's client, and the CAR reader under it); the reader does not
	// hash them twice.
	CheckedBySource
	// CheckNodesOnly: a store on this machine written by kubo under each
	// block's hash (flatfs). The reader checks the nodes with links, which
	// give the file its shape, so that a damaged store cannot send a read
	// round in circles; it leaves the leaves, which carry the bytes, to the
	// caller's end-to-end check (the substituter's NarHash): hashing them
	// here would cost about 0.6 CPU-s per GiB (SHA-256 at 1.7 GB/s)
	// against about 0.2 for reading them, and this path exists for speed
	// (docs/BENCHMARKS.md, section 4).
	CheckNodesOnly
)

// LeafOpener is a Source that can hand a raw leaf over as a stream (a file
// on local disk), which the reader then reads straight into its caller's
// buffer with no copy in between. Used only for leaves the reader does not
// check (CheckNodesOnly).
type LeafOpener interface {
	// OpenLeaf opens the raw block c; size is its length.
	OpenLeaf(c cid.Cid) (rc io.ReadCloser, size int64, err error)
}

// Streamer is a Source that also streams a file's bytes from an offset,
// walking the DAG itself: a kubo daemon (its gateway or RPC cat), which
// fetches from peers what it lacks. A reader uses it where walking the
// blocks here would cost more (kubo's gateway streams a file for less CPU
// than one block/get per block), or to read on from where a walk stopped.
type Streamer interface {
	Source
	Stream(ctx context.Context, c cid.Cid, off int64) (io.ReadCloser, error)
}

// Sizer is a file whose size its source announced before its bytes (a
// UnixFS root, a gateway's Content-Length), or -1 when it did not. Files
// from Open, and a kubo Reader's, implement it.
type Sizer interface {
	Size() int64
}

// Sequence gives a file's blocks in the order a depth-first walk needs
// them (a CAR of the whole DAG), checked against their CIDs. Once Next
// fails the walk takes the rest from its Source, one block at a time.
type Sequence interface {
	// Next returns the next block, which must be c.
	Next(c cid.Cid) ([]byte, error)
	// Close ends the sequence; complete says the walk read every block
	// it needed, so that anything left over is worth a word.
	Close(complete bool)
}

// ErrBlockMismatch is a block whose bytes do not hash to its CID: the
// source (or something between) gave other data than asked for.
var ErrBlockMismatch = errors.New("block does not match its CID")

// ErrNotLocal is a block the source does not hold.
var ErrNotLocal = errors.New("block not in the local block store")

// MaxBlockSize is the largest block accepted from a remote source: 2 MiB,
// the most bitswap moves, so no IPFS node can hold a larger one it could
// serve.
const MaxBlockSize = 2 << 20

// MaxDepth bounds the DAG a file is read through. A balanced UnixFS DAG of
// 174-link nodes holds 174^5 chunks (petabytes) at depth 5; trickle DAGs
// are deeper but not by this much.
const MaxDepth = 64

// identity returns the data an identity CID holds in itself.
func identity(c cid.Cid) ([]byte, bool) {
	if c.Prefix().MhType != mh.IDENTITY {
		return nil, false
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, false
	}
	return d.Digest, true
}
