// Package cidparams are the import parameters that, with the bytes, decide
// a CID: CID version, chunker, raw leaves, hash function, file DAG width,
// and whether the daemon keeps a reference instead of the blocks. They are
// recorded with every CID published (the "published" event's import), so
// a CID can be checked and made again; package ipfs applies them to kubo's
// add, package nardag builds the reference-aware chunker's DAGs.
package cidparams

import (
	"bytes"
	"fmt"
	"strings"

	chunk "github.com/ipfs/boxo/chunker"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/nardag"
)

// Params are the import parameters that, with the bytes, decide a CID.
// Record them next to every CID they produced: see the package comment.
type Params struct {
	CIDVersion int // 0 or 1
	// Chunker is kubo's ("size-<bytes>", "rabin-<min>-<avg>-<max>",
	// "buzhash") or the reference-aware "nix-refs-<gap>-<size>" (package
	// nardag), whose DAGs are built in process and sent with Import.
	Chunker      string
	RawLeaves    bool   // leaves as raw blocks rather than dag-pb wrapped
	HashFunction string // a multihash name, e.g. "sha2-256"
	// MaxFileLinks is the width of the balanced file DAG. Zero means 174,
	// the value kubo has always used by default; it is recorded because
	// kubo's newer profiles (Import.UnixFSFileMaxLinks, unixfs-v1-2025)
	// change it, and with it the CID of every file above 174 chunks.
	MaxFileLinks int
	// Nocopy stores a reference to the file instead of its blocks (kubo's
	// filestore). Only AddFile can honour it.
	Nocopy bool
}

// DefaultMaxFileLinks is helpers.DefaultLinksPerBlock in boxo, kubo's
// default when Import.UnixFSFileMaxLinks is unset.
const DefaultMaxFileLinks = 174

// Default are CIDv1, 256 KiB fixed-size chunks, raw leaves, SHA-256
// and 174 links per file node: what `ipfs add --cid-version=1` produces on a
// daemon with the default Import configuration.
func Default() Params {
	return Params{
		CIDVersion:   1,
		Chunker:      "size-262144",
		RawLeaves:    true,
		HashFunction: "sha2-256",
		MaxFileLinks: DefaultMaxFileLinks,
	}
}

func (p Params) String() string {
	s := fmt.Sprintf("cid-version=%d chunker=%s raw-leaves=%t hash=%s max-file-links=%d",
		p.CIDVersion, p.Chunker, p.RawLeaves, p.HashFunction, p.MaxLinks())
	if p.Nocopy {
		s += " nocopy"
	}
	return s
}

// MaxLinks is MaxFileLinks, with zero read as kubo's default.
func (p Params) MaxLinks() int {
	if p.MaxFileLinks == 0 {
		return DefaultMaxFileLinks
	}
	return p.MaxFileLinks
}

// Validate reports parameters kubo would refuse or that would leave the CID
// to the daemon's configuration, as errs.Invalid. Checking here rather than
// relying on the daemon keeps the kind right: kubo reports most refusals as
// an HTTP 500, which is indistinguishable from a daemon in trouble.
func (p Params) Validate() error {
	if p.CIDVersion != 0 && p.CIDVersion != 1 {
		return errs.Errorf(errs.Invalid, "ipfs params: unknown CID version %d (want 0 or 1)", p.CIDVersion)
	}
	if p.Chunker == "" {
		return errs.Errorf(errs.Invalid, "ipfs params: empty chunker (it decides the CID, so it must be explicit)")
	}
	if nardag.IsRefs(p.Chunker) {
		return p.validateRefs()
	}
	if _, err := chunk.FromString(bytes.NewReader(nil), p.Chunker); err != nil {
		return errs.Errorf(errs.Invalid, "ipfs params: chunker %q: %w", p.Chunker, err)
	}
	h := strings.ToLower(p.HashFunction)
	if _, ok := mh.Names[h]; !ok {
		return errs.Errorf(errs.Invalid, "ipfs params: unknown hash function %q", p.HashFunction)
	}
	if p.CIDVersion == 0 && h != "sha2-256" {
		return errs.Errorf(errs.Invalid, "ipfs params: CIDv0 supports only sha2-256, not %q", p.HashFunction)
	}
	if p.MaxFileLinks < 0 {
		return errs.Errorf(errs.Invalid, "ipfs params: negative max file links %d", p.MaxFileLinks)
	}
	if p.Nocopy && !p.RawLeaves {
		// The filestore can only reference leaves that are the file's own
		// bytes; kubo would silently switch raw leaves on and change the CID.
		return errs.Errorf(errs.Invalid, "ipfs params: nocopy needs raw leaves")
	}
	return nil
}

// validateRefs checks parameters with a reference-aware chunker: its DAGs
// are built by nardag, which makes what `ipfs add --cid-version=1` would
// (raw leaves, SHA-256, 174 links), and reach kubo as blocks, which its
// filestore cannot reference.
func (p Params) validateRefs() error {
	if _, err := nardag.ParseRefs(p.Chunker); err != nil {
		return errs.Errorf(errs.Invalid, "ipfs params: %w", err)
	}
	if p.Nocopy {
		return errs.Errorf(errs.Config, "ipfs params: chunker %s cannot be used with nocopy: kubo's filestore references only what its own add cut (use a kubo chunker such as size-262144 or buzhash with --ipfs-nocopy)", p.Chunker)
	}
	if p.CIDVersion != 1 || !p.RawLeaves || strings.ToLower(p.HashFunction) != "sha2-256" || p.MaxLinks() != DefaultMaxFileLinks {
		return errs.Errorf(errs.Invalid, "ipfs params: chunker %s builds CIDv1, raw leaves, sha2-256, %d links only (got %s)", p.Chunker, DefaultMaxFileLinks, p)
	}
	return nil
}

// Kubo reports whether kubo's add can make the DAG these parameters name.
func (p Params) Kubo() bool { return !nardag.IsRefs(p.Chunker) }
