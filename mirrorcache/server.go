package mirrorcache

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/substituter"
)

// NewServer serves c to stock Nix: nix-cache-info and the narinfos as kept
// (byte-identical to the origin's), and each NAR read from node by the
// narinfo's IPFSHash and checked against its NarHash and NarSize before a
// byte is sent. It is the substituter's server with this directory as its
// only upstream: the same checks, the same metrics
// (nixipfs_substituter_*), the same refusal of every other path. A NAR
// whose bytes IPFS cannot produce is answered 404, since the directory
// holds no NAR files, so that the client tries its next substituter.
func NewServer(c *Cache, node substituter.IPFS, log *zap.Logger, reg prometheus.Registerer) (*substituter.Server, error) {
	return substituter.New(substituter.Options{
		Upstream:   "file://" + c.d.Dir,
		IPFS:       node,
		Log:        log,
		Registerer: reg,
		NarIndex:   c.NarIndex,
		// The files change only by atomic renames of this process's
		// writes; a short memory keeps retired paths from lingering.
		NarinfoTTL:  substituter.DefaultNegativeTTL,
		NegativeTTL: -1,
	})
}
