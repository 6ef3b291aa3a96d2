package publisher

import (
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/mfsdir"
)

// The cache as a UnixFS directory in MFS (--mfs-dir) is package mfsdir's;
// these names are the publisher's for it.
type (
	// MFSNode is what keeping the cache in MFS needs from kubo.
	MFSNode = mfsdir.Node
	// MFSCache keeps the cache in MFS.
	MFSCache = mfsdir.Cache
)

// DefaultMFSAnnounceEvery is how often, at most, a new cache root is
// announced.
const DefaultMFSAnnounceEvery = mfsdir.DefaultAnnounceEvery

// NewMFSCache keeps the cache under the MFS directory dir (mfsdir.New).
func NewMFSCache(node MFSNode, dir, storeDir, host string, log *zap.Logger) (*MFSCache, error) {
	return mfsdir.New(node, dir, storeDir, host, log)
}
