package nardag

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// RefsPrefix starts the name of a reference-aware chunker:
// "nix-refs-<gap>-<size>".
const RefsPrefix = "nix-refs-"

// DefaultRefs is the reference-aware chunker chosen in docs/CHUNKING.md:
// hashes less than 4 KiB apart joined, 248 KiB chunks between them. It
// moves 1.2% of an upgrade's new NAR bytes (8,031 blocks per GiB against
// buzhash's 5,679). Not 256 KiB or more: a bitswap message carrying a
// block and its framing must fit in a new libp2p stream's first 256 KiB
// window, or every block waits a round trip for more; with 512 KiB
// chunks a client fetched over an 80 ms link at 5.8 MB/s, with 248 KiB
// at 11.2 (docs/BENCHMARKS.md, "Second round").
var DefaultRefs = Refs{Gap: 4096, Size: 248 << 10}

// MaxBlock is the largest block kubo accepts from outside (`dag import`,
// `block put`) without --allow-big-block.
const MaxBlock = 1 << 20

// maxCluster bounds a block of joined hashes: a chunk's worth already,
// well under MaxBlock.
const maxCluster = 256 << 10

// Refs is a reference-aware chunker's parameters.
type Refs struct {
	// Gap joins a hash to the next one when fewer than Gap bytes lie
	// between them: the hashes and the bytes between become one block.
	// Text that names many store paths (wrappers, docs, manifests) then
	// makes a few blocks instead of two per hash.
	Gap int
	// Size is the fixed chunk size between hashes.
	Size int
}

// String is the chunker's name, recorded with every CID it made.
func (r Refs) String() string { return fmt.Sprintf("%s%d-%d", RefsPrefix, r.Gap, r.Size) }

// IsRefs reports whether name names a reference-aware chunker (valid or
// not): kubo cannot make its DAGs.
func IsRefs(name string) bool { return strings.HasPrefix(name, RefsPrefix) }

// ParseRefs parses "nix-refs-<gap>-<size>".
func ParseRefs(name string) (Refs, error) {
	rest, ok := strings.CutPrefix(name, RefsPrefix)
	g, s, ok2 := strings.Cut(rest, "-")
	if !ok || !ok2 {
		return Refs{}, errs.Errorf(errs.Invalid, "chunker %q: want %s<gap>-<size>", name, RefsPrefix)
	}
	gap, err1 := strconv.Atoi(g)
	size, err2 := strconv.Atoi(s)
	if err1 != nil || err2 != nil || gap < 0 || size < 1 || size > MaxBlock || gap > maxCluster {
		return Refs{}, errs.Errorf(errs.Invalid, "chunker %q: want %s<gap>-<size>, 0 <= gap <= %d, 1 <= size <= %d", name, RefsPrefix, maxCluster, MaxBlock)
	}
	r := Refs{Gap: gap, Size: size}
	if r.String() != name {
		// One name per chunker: "nix-refs-04096-..." would record a second
		// name for the same CIDs.
		return Refs{}, errs.Errorf(errs.Invalid, "chunker %q: write it %s", name, r)
	}
	return r, nil
}
