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
	"sync"
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
	nar := NAR(p)
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

// NAR returns p's synthetic NAR bytes (not a NAR's format: what a cache
// stores and kubo hashes is all that matters here), derived from its store
// path, of p.Size bytes (at least 8).
func NAR(p Path) []byte {
	nar := make([]byte, max(p.Size, 8))
	seed := sha256.Sum256([]byte(p.StorePath))
	for i := 0; i < len(nar); i += 32 {
		copy(nar[i:], seed[:])
		binary.LittleEndian.PutUint32(nar[i:], uint32(i))
	}
	return nar
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

// Nixpkgs calls fn with n paths shaped like a nixpkgs package set, each
// after everything it references: a few core paths (libc, a shell, a
// compiler runtime: a chain of Core) referenced by almost every path,
// libraries in long chains (each references the one before it, chains of
// ChainLen), and many leaves (applications) referencing a core path and a
// library or two and referenced by nothing. The same seed gives the same
// paths. Store paths are built as fn is called, so a million paths cost no
// memory here.
func Nixpkgs(seed string, n int, fn func(i int, p Path) error) error {
	const (
		Core     = 8
		ChainLen = 64
	)
	sp := func(i int) string {
		return StorePath(fmt.Sprintf("%s-%d", seed, i), fmt.Sprintf("pkg%d-1.0", i))
	}
	rnd := uint64(0x9e3779b97f4a7c15)
	next := func() uint64 { // xorshift: deterministic, cheap
		rnd ^= rnd << 13
		rnd ^= rnd >> 7
		rnd ^= rnd << 17
		return rnd
	}
	var libs []int32 // indexes of library paths so far
	for i := 0; i < n; i++ {
		var refs []int
		switch {
		case i < Core:
			if i > 0 {
				refs = append(refs, i-1)
			}
		case i%5 < 2: // a library: core, and the previous link of its chain
			refs = append(refs, int(next()%Core))
			if len(libs) > 0 && len(libs)%ChainLen != 0 {
				refs = append(refs, int(libs[len(libs)-1]))
			}
			libs = append(libs, int32(i))
		default: // a leaf
			refs = append(refs, int(next()%Core))
			for k := 0; k < 1+int(next()%2) && len(libs) > 0; k++ {
				refs = append(refs, int(libs[next()%uint64(len(libs))]))
			}
		}
		p := Path{StorePath: sp(i), Size: 64}
		for _, r := range refs {
			p.Refs = append(p.Refs, sp(r))
		}
		if err := fn(i, p); err != nil {
			return err
		}
	}
	return nil
}

// WriteNixpkgs writes the n paths of Nixpkgs(seed, n) into dir (an Init
// cache), on workers goroutines, with modification time mtime, and calls
// each (if set) with every path written, in order, from one goroutine.
func WriteNixpkgs(dir, seed string, n, workers int, mtime time.Time, each func(i int, p Path) error) error {
	type job struct {
		i int
		p Path
	}
	jobs := make(chan job, 256)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < max(workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if _, err := Write(dir, j.p, mtime); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	err := Nixpkgs(seed, n, func(i int, p Path) error {
		select {
		case err := <-errc:
			return err
		default:
		}
		jobs <- job{i, p}
		if each != nil {
			return each(i, p)
		}
		return nil
	})
	close(jobs)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
