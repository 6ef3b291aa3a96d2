// Package synthcache writes binary caches of synthetic paths in the real
// file format (nix-cache-info, narinfos as the publisher writes them,
// nar/<filehash>.nar), for retention's tests and benchmark.
package synthcache

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// Path is one synthetic store path.
type Path struct {
	StorePath string
	// Refs are store paths it references.
	Refs []string
	// Size is the NAR's size in bytes.
	Size int
}

// StorePath returns a store path whose hash part derives from seed.
func StorePath(seed, name string) string {
	sum := sha256.Sum256([]byte(seed))
	h := nixbase32.EncodeToString(sum[:20])
	return "/nix/store/" + h + "-" + name
}

// Init creates dir as an empty cache.
func Init(dir string) error {
	c := cachedir.Cache{Dir: dir}
	if err := os.MkdirAll(c.NarDir(), 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.CacheInfoPath(), []byte("StoreDir: /nix/store\n"), 0o644)
}

// Write writes p's NAR and narinfo into dir, with modification time mtime
// (zero: now), and returns the narinfo.
func Write(dir string, p Path, mtime time.Time) (*narinfo.NarInfo, error) {
	nar := make([]byte, max(p.Size, 8))
	seed := sha256.Sum256([]byte(p.StorePath))
	for i := 0; i < len(nar); i += 32 {
		copy(nar[i:], seed[:])
		binary.LittleEndian.PutUint32(nar[i:], uint32(i))
	}
	sum := sha256.Sum256(nar)
	h := nixbase32.EncodeToString(sum[:])
	mh, _ := multihash.Sum(nar, multihash.SHA2_256, -1)
	ni := &narinfo.NarInfo{
		StorePath: p.StorePath, URL: cachedir.NarURL(h), Compression: "none",
		FileHash: "sha256:" + h, FileSize: uint64(len(nar)), NarHash: "sha256:" + h, NarSize: uint64(len(nar)),
		IPFSHash: cid.NewCidV1(cid.Raw, mh).String(),
	}
	for _, r := range p.Refs {
		ni.References = append(ni.References, filepath.Base(r))
	}
	c := cachedir.Cache{Dir: dir}
	narPath := c.NarPath(ni.URL)
	if err := os.WriteFile(narPath, nar, 0o644); err != nil {
		return nil, err
	}
	infoPath := c.NarInfoPath(filepath.Base(p.StorePath)[:32])
	if err := os.WriteFile(infoPath, []byte(ni.String()), 0o644); err != nil {
		return nil, err
	}
	if !mtime.IsZero() {
		for _, f := range []string{narPath, infoPath} {
			if err := os.Chtimes(f, mtime, mtime); err != nil {
				return nil, err
			}
		}
	}
	return ni, nil
}

// Generation describes one generation of a package set: nShared paths all
// generations share, and nLeaves leaves of its own, plus a top path that
// references everything. It returns the paths, the top last.
func Generation(set string, gen, nShared, nLeaves, size int) []Path {
	var out []Path
	var refs []string
	for i := 0; i < nShared; i++ {
		sp := StorePath(fmt.Sprintf("%s-shared-%d", set, i), fmt.Sprintf("shared%d-1.0", i))
		var r []string
		if i > 0 {
			r = []string{refs[i-1]} // a chain, so closures are deep
		}
		out = append(out, Path{StorePath: sp, Refs: r, Size: size})
		refs = append(refs, sp)
	}
	shared := len(refs)
	for i := 0; i < nLeaves; i++ {
		sp := StorePath(fmt.Sprintf("%s-g%d-leaf-%d", set, gen, i), fmt.Sprintf("leaf%d-%d", i, gen))
		var r []string
		if shared > 0 {
			r = []string{refs[(i*7)%shared]}
		}
		out = append(out, Path{StorePath: sp, Refs: r, Size: size})
		refs = append(refs, sp)
	}
	top := StorePath(fmt.Sprintf("%s-g%d-top", set, gen), fmt.Sprintf("%s-%d.0", set, gen))
	out = append(out, Path{StorePath: top, Refs: append([]string{top}, refs...), Size: size})
	return out
}
