// Package mirrorcache is a mirror's own binary cache: the narinfos of the
// paths the mirror pins, rebuilt from "published" events byte for byte as
// the origin wrote them, kept on disk, and served over HTTP with each NAR
// read from the mirror's kubo and checked against the signed NarHash. With
// it, clients substitute from a mirror when the origin (host A) is gone.
//
// # The narinfo from an event
//
// The publisher writes uncompressed caches (compression=none), so a
// narinfo is a function of the event: URL is nar_url, FileHash is NarHash,
// FileSize is NarSize, Deriver, Sig and CA come from the event (v2), and
// IPFSHash is the cid. NarInfo rebuilds it; a test proves the result equal
// to the publisher's file, and so to what `nix copy` writes. A v1 event
// carries no signature: a narinfo rebuilt from it would be refused by every
// client that requires signatures, so none is written (ErrUnsigned) and the
// CID is still pinned.
//
// # On disk
//
//	DIR/nix-cache-info                  "StoreDir: /nix/store", as the origin's
//	DIR/<hashpart>.narinfo              one per path pinned
//	DIR/.nix-ipfs/nar/<filehash>        the hash part whose narinfo names that NAR
//
// Package cachedir owns that layout (OpenMirror, MirrorIndexDir). Every
// file is written atomically, the index entry before the narinfo, so a
// narinfo is never visible without the way to its NAR. There are no NAR
// files: NARs live in kubo.
package mirrorcache

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// ErrUnsigned is why no narinfo is rebuilt from an event without
// signatures (a published.v1 event).
var ErrUnsigned = errors.New("the event carries no signature (a published.v1 event): a narinfo rebuilt from it would be unsigned, so none is kept; the CID is still pinned")

// NarInfo rebuilds the narinfo the publisher wrote for ev. It fails with
// ErrUnsigned for an event without Sigs, and with an Invalid error when the
// event's fields cannot be an uncompressed cache's narinfo.
func NarInfo(ev *events.Published) (*narinfo.NarInfo, error) {
	if len(ev.Sigs) == 0 {
		return nil, ErrUnsigned
	}
	if !strings.HasPrefix(ev.NarHash, "sha256:") || ev.NarURL != cachedir.NarURL(ev.NarHash) {
		return nil, errs.Errorf(errs.Invalid, "published event %s: nar_url %q is not the uncompressed NAR of %s", ev.ID, ev.NarURL, ev.NarHash)
	}
	if ev.NarSize <= 0 {
		return nil, errs.Errorf(errs.Invalid, "published event %s: nar_size %d", ev.ID, ev.NarSize)
	}
	ni := &narinfo.NarInfo{
		StorePath:   ev.StorePath,
		URL:         ev.NarURL,
		Compression: "none",
		FileHash:    ev.NarHash,
		FileSize:    uint64(ev.NarSize),
		NarHash:     ev.NarHash,
		NarSize:     uint64(ev.NarSize),
		References:  append([]string(nil), ev.References...),
		Deriver:     ev.Deriver,
		Sigs:        append([]string(nil), ev.Sigs...),
		CA:          ev.CA,
		IPFSHash:    ev.CID,
		IPFSSigs:    append([]string(nil), ev.IPFSSigs...),
	}
	if len(ni.IPFSSigs) == 0 {
		ni.IPFSSigs = nil
	}
	if len(ni.References) == 0 {
		ni.References = nil
	}
	return ni, nil
}

// Servable says whether ni can be kept in a mirror's cache: an uncompressed
// NAR with a CID and a signature. Narinfos read from another cache (backfill)
// that fail it are pinned but not served.
func Servable(ni *narinfo.NarInfo) error {
	switch {
	case ni.IPFSHash == "":
		return errs.Errorf(errs.Invalid, "narinfo of %s has no IPFSHash", ni.StorePath)
	case ni.Compression != "none":
		return errs.Errorf(errs.Invalid, "narinfo of %s: compression %s: the CID is the uncompressed NAR, which a client would not find at URL %s", ni.StorePath, ni.Compression, ni.URL)
	case len(ni.Sigs) == 0:
		return errs.Errorf(errs.Invalid, "narinfo of %s has no signature", ni.StorePath)
	}
	if _, ok := cachedir.NarFileHash(ni.URL); !ok {
		return errs.Errorf(errs.Invalid, "narinfo of %s: URL %q is not nar/<nix32>.nar", ni.StorePath, ni.URL)
	}
	return nil
}

// Cache is a mirror's binary cache directory.
type Cache struct {
	d cachedir.Cache
}

// Open creates the cache's directories and nix-cache-info if missing, and
// refuses a directory that serves another store.
func Open(dir, storeDir string) (*Cache, error) {
	if dir == "" {
		return nil, errs.Errorf(errs.Invalid, "mirror cache: no directory")
	}
	if err := storepath.ValidateStoreDir(storeDir); err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("mirror cache %s: %w", dir, err))
	}
	c := &Cache{d: cachedir.Cache{Dir: dir, StoreDir: storeDir}}
	if err := c.d.OpenMirror(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.d.Dir }

// StoreDir is the store the cache serves.
func (c *Cache) StoreDir() string { return c.d.StoreDir }

// Put keeps ni, which must pass Servable and be for this cache's store.
// Writing the same narinfo again changes nothing.
func (c *Cache) Put(ni *narinfo.NarInfo) error {
	if err := Servable(ni); err != nil {
		return err
	}
	if err := storepath.Validate(c.d.StoreDir, ni.StorePath); err != nil {
		return errs.E(errs.Invalid, fmt.Errorf("mirror cache serves %s: %w", c.d.StoreDir, err))
	}
	hp := storepath.HashPart(ni.StorePath)
	text := []byte(ni.String())
	if old, err := c.d.ReadNarInfoBytes(hp); err == nil && string(old) == string(text) {
		return nil
	}
	fh, _ := cachedir.NarFileHash(ni.URL)
	if err := c.d.WriteMirrorIndex(fh, hp); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("mirror cache: index of %s: %w", ni.StorePath, err))
	}
	if err := c.d.WriteNarInfo(hp, text, nil); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("mirror cache: narinfo of %s: %w", ni.StorePath, err))
	}
	return nil
}

// Get returns the narinfo kept for storePath's hash part, or nil.
func (c *Cache) Get(hashPart string) (*narinfo.NarInfo, error) {
	if storepath.ValidateHashPart(hashPart) != nil {
		return nil, nil
	}
	b, err := c.d.ReadNarInfoBytes(hashPart)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, nil
	}
	return narinfo.ParseBytes(b)
}

// Remove drops the narinfo of storePath (a retired path) and its index
// entry. Removing what is not there is no error.
func (c *Cache) Remove(storePath string) error {
	hp := storepath.HashPart(path.Base(storePath))
	if storepath.ValidateHashPart(hp) != nil {
		return errs.Errorf(errs.Invalid, "mirror cache: %q is not a store path", storePath)
	}
	ni, err := c.Get(hp)
	if err != nil && !errs.Is(err, errs.Transient) {
		ni = nil // unreadable: remove it all the same
	} else if err != nil {
		return err
	}
	if err := c.d.RemoveNarInfo(hp); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("mirror cache: remove narinfo of %s: %w", storePath, err))
	}
	if ni != nil {
		if fh, ok := cachedir.NarFileHash(ni.URL); ok {
			c.d.DropMirrorIndex(fh, hp)
		}
	}
	return atomicfile.SyncDir(c.d.Dir)
}

// NarIndex maps a NAR request path ("/nar/<filehash>.nar") to the request
// path of the narinfo that names it, for substituter.Options.NarIndex.
func (c *Cache) NarIndex(narPath string) (string, bool) {
	fh, ok := cachedir.NarFileHash(strings.TrimPrefix(narPath, "/"))
	if !ok {
		return "", false
	}
	hp, ok := c.d.MirrorIndex(fh)
	if !ok || storepath.ValidateHashPart(hp) != nil {
		return "", false
	}
	return "/" + cachedir.NarInfoName(hp), true
}
