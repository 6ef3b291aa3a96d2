package nixstore

import (
	"context"
	"errors"
	"time"
)

// PathInfo is what the Nix store records about one valid store path.
type PathInfo struct {
	Path             string   // absolute store path
	NarHash          string   // "sha256:<nix32>", as a narinfo's NarHash
	NarSize          uint64   // 0 if the store never recorded it
	References       []string // absolute paths, sorted; may include Path itself (self-reference)
	Deriver          string   // absolute .drv path or ""
	Sigs             []string // "keyname:base64", in the order the store keeps them
	CA               string   // content address ("fixed:r:sha256:...", "text:sha256:...") or ""
	RegistrationTime time.Time
	Ultimate         bool // built on this machine rather than substituted
}

// Store is what the publisher needs from a Nix store. The database ([DB]) is
// one implementation; a nix-daemon worker-protocol client may be another.
// Implementations are safe for concurrent use.
type Store interface {
	// StoreDir is the store directory, "/nix/store" by default.
	StoreDir() string
	// QueryPathInfo returns the metadata of one valid store path. A path
	// that is not valid in the store is an errs.Invalid error wrapping
	// ErrNotValid.
	QueryPathInfo(ctx context.Context, path string) (*PathInfo, error)
	// Closure returns every path reachable by references from paths, paths
	// included, sorted, deduplicated: what nix-store -qR prints.
	Closure(ctx context.Context, paths []string) ([]string, error)
	Close() error
}

// DefaultDBPath is where a default Nix installation keeps its database.
const DefaultDBPath = "/nix/var/nix/db/db.sqlite"

// ErrNotValid is wrapped by the error for a path that is not (or no longer)
// valid in the store: never built or fetched, or garbage-collected.
var ErrNotValid = errors.New("not a valid path in the Nix store")
