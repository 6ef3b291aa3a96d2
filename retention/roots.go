package retention

import (
	"github.com/nix-ipfs/nix-ipfs/retention/roots"
)

// Root is the outputs of one build: it keeps their whole closure while it
// is live.
type Root = roots.Root

// Roots is a set of roots, one per distinct set of outputs.
type Roots = roots.Set

// NewRoots returns an empty set.
func NewRoots() *Roots { return roots.New() }
