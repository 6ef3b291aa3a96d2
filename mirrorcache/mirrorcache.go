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
// Every file is written atomically (internal/atomicfile), the index entry
// before the narinfo, so a narinfo is never visible without the way to its
// NAR. There are no NAR files: NARs live in kubo.
package mirrorcache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

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
	hash, ok := strings.CutPrefix(ev.NarHash, "sha256:")
	if !ok || ev.NarURL != "nar/"+hash+".nar" {
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
	if _, ok := narFileHash(ni.URL); !ok {
		return errs.Errorf(errs.Invalid, "narinfo of %s: URL %q is not nar/<nix32>.nar", ni.StorePath, ni.URL)
	}
	return nil
}

// Cache is a mirror's binary cache directory.
type Cache struct {
	dir      string
	storeDir string
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
	c := &Cache{dir: dir, storeDir: storeDir}
	if err := os.MkdirAll(c.indexDir(), 0o755); err != nil {
		return nil, fmt.Errorf("mirror cache %s: %w", dir, err)
	}
	info := filepath.Join(dir, "nix-cache-info")
	want := "StoreDir: " + storeDir + "\n"
	switch b, err := os.ReadFile(info); {
	case errors.Is(err, fs.ErrNotExist):
		// Exactly what the origin's publisher (and Nix) writes.
		if err := atomicfile.WriteFile(info, []byte(want), 0o644); err != nil {
			return nil, fmt.Errorf("mirror cache %s: %w", dir, err)
		}
	case err != nil:
		return nil, fmt.Errorf("mirror cache %s: %w", dir, err)
	default:
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "StoreDir: "); ok && v != storeDir {
				return nil, errs.Errorf(errs.Invalid, "mirror cache %s is for store %s, not %s", dir, v, storeDir)
			}
		}
	}
	for _, d := range []string{dir, c.indexDir()} {
		atomicfile.Clean(d, atomicfile.StaleAfter) // younger ones may be a live writer's
	}
	return c, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// StoreDir is the store the cache serves.
func (c *Cache) StoreDir() string { return c.storeDir }

func (c *Cache) indexDir() string { return filepath.Join(c.dir, ".nix-ipfs", "nar") }

func (c *Cache) narinfoPath(hashPart string) string {
	return filepath.Join(c.dir, hashPart+".narinfo")
}

// Put keeps ni, which must pass Servable and be for this cache's store.
// Writing the same narinfo again changes nothing.
func (c *Cache) Put(ni *narinfo.NarInfo) error {
	if err := Servable(ni); err != nil {
		return err
	}
	if err := storepath.Validate(c.storeDir, ni.StorePath); err != nil {
		return errs.E(errs.Invalid, fmt.Errorf("mirror cache serves %s: %w", c.storeDir, err))
	}
	hp := storepath.HashPart(ni.StorePath)
	text := []byte(ni.String())
	if old, err := os.ReadFile(c.narinfoPath(hp)); err == nil && string(old) == string(text) {
		return nil
	}
	fh, _ := narFileHash(ni.URL)
	if err := atomicfile.WriteFile(filepath.Join(c.indexDir(), fh), []byte(hp+"\n"), 0o644); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("mirror cache: index of %s: %w", ni.StorePath, err))
	}
	if err := atomicfile.WriteFile(c.narinfoPath(hp), text, 0o644); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("mirror cache: narinfo of %s: %w", ni.StorePath, err))
	}
	return nil
}

// Get returns the narinfo kept for storePath's hash part, or nil.
func (c *Cache) Get(hashPart string) (*narinfo.NarInfo, error) {
	if storepath.ValidateHashPart(hashPart) != nil {
		return nil, nil
	}
	b, err := os.ReadFile(c.narinfoPath(hashPart))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.E(errs.Transient, err)
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
	if err := os.Remove(c.narinfoPath(hp)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errs.E(errs.Transient, fmt.Errorf("mirror cache: remove narinfo of %s: %w", storePath, err))
	}
	if ni != nil {
		if fh, ok := narFileHash(ni.URL); ok {
			idx := filepath.Join(c.indexDir(), fh)
			// Another path with the very same NAR may own the entry now.
			if b, err := os.ReadFile(idx); err == nil && strings.TrimSpace(string(b)) == hp {
				os.Remove(idx)
			}
		}
	}
	return atomicfile.SyncDir(c.dir)
}

// NarIndex maps a NAR request path ("/nar/<filehash>.nar") to the request
// path of the narinfo that names it, for substituter.Options.NarIndex.
func (c *Cache) NarIndex(narPath string) (string, bool) {
	fh, ok := narFileHash(strings.TrimPrefix(narPath, "/"))
	if !ok {
		return "", false
	}
	b, err := os.ReadFile(filepath.Join(c.indexDir(), fh))
	if err != nil {
		return "", false
	}
	hp := strings.TrimSpace(string(b))
	if storepath.ValidateHashPart(hp) != nil {
		return "", false
	}
	return "/" + hp + ".narinfo", true
}

// narFileHash returns the nix32 hash of an uncompressed NAR URL.
func narFileHash(url string) (string, bool) {
	h, ok := strings.CutPrefix(url, "nar/")
	if !ok {
		return "", false
	}
	h, ok = strings.CutSuffix(h, ".nar")
	if !ok || len(h) != 52 || strings.Trim(h, "0123456789abcdfghijklmnpqrsvwxyz") != "" {
		return "", false
	}
	return h, true
}
