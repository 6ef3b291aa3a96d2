package mirror

import (
	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/latest"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
)

// KeepLatest writes a job's latest-build document from a "latest" event
// into the mirror's cache, byte for byte as the publisher wrote it, unless
// the cache holds a newer build of the job. A mirror without a cache has
// nothing to do. The mirror checks no signature (it holds no key): a
// client does, and a document from another store is refused here.
func KeepLatest(c *mirrorcache.Cache, ev *events.Latest) error {
	if c == nil {
		return nil
	}
	if ev.StoreDir != c.StoreDir() {
		return errs.Errorf(errs.Invalid, "latest event %s is for store %s; this cache is of %s", ev.ID, ev.StoreDir, c.StoreDir())
	}
	_, err := latest.Keep(cachedir.Cache{Dir: c.Dir(), StoreDir: c.StoreDir()}, []byte(ev.Document))
	return err
}
