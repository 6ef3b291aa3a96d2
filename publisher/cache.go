package publisher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// Cache is a file:// binary cache directory laid out as `nix copy --to
// file://DIR?compression=none` lays it out: nix-cache-info,
// <hashpart>.narinfo, nar/<filehash>.nar. Alongside, .nix-ipfs/ holds the
// publisher's own state (which paths were announced).
type Cache struct {
	Dir      string
	StoreDir string
}

// Open creates the cache's directories and its nix-cache-info if missing.
func (c Cache) Open() error {
	for _, d := range []string{c.Dir, c.narDir(), c.announcedDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cache %s: %w", c.Dir, notPermitted(c.Dir, "write", err))
		}
	}
	info := filepath.Join(c.Dir, "nix-cache-info")
	if _, err := os.Stat(info); errors.Is(err, fs.ErrNotExist) {
		// Exactly what Nix's BinaryCacheStore::init writes.
		if err := atomicfile.WriteFile(info, []byte("StoreDir: "+c.StoreDir+"\n"), 0o644); err != nil {
			return fmt.Errorf("cache %s: %w", c.Dir, notPermitted(c.Dir, "write", err))
		}
	} else if err != nil {
		return fmt.Errorf("cache %s: %w", c.Dir, err)
	} else {
		data, err := os.ReadFile(info)
		if err != nil {
			return fmt.Errorf("cache %s: %w", c.Dir, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "StoreDir: "); ok && v != c.StoreDir {
				return errs.Errorf(errs.Invalid, "cache %s is for store %s, not %s", c.Dir, v, c.StoreDir)
			}
		}
	}
	c.CleanStale()
	return nil
}

// CleanStale removes what a crashed writer left half-written: temp files
// not written for atomicfile.StaleAfter. They were never visible. Younger
// ones may be another live publisher's, sharing this cache.
func (c Cache) CleanStale() {
	for _, d := range []string{c.Dir, c.narDir()} {
		atomicfile.Clean(d, atomicfile.StaleAfter)
	}
}

func (c Cache) narDir() string       { return filepath.Join(c.Dir, "nar") }
func (c Cache) announcedDir() string { return filepath.Join(c.Dir, ".nix-ipfs", "announced") }

// NarInfoPath is where the narinfo of the path with hashPart lives.
func (c Cache) NarInfoPath(hashPart string) string {
	return filepath.Join(c.Dir, hashPart+".narinfo")
}

// NarPath is where a NAR with URL "nar/<x>.nar" lives.
func (c Cache) NarPath(url string) string { return filepath.Join(c.Dir, filepath.FromSlash(url)) }

// ReadNarInfo returns the cache's narinfo for hashPart, or nil if absent.
func (c Cache) ReadNarInfo(hashPart string) (*narinfo.NarInfo, error) {
	f, err := os.Open(c.NarInfoPath(hashPart))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.E(errs.Transient, err)
	}
	defer f.Close()
	ni, err := narinfo.Parse(f)
	if err != nil {
		// A narinfo we cannot read is replaced by a good one.
		return nil, nil
	}
	return ni, nil
}

// Touch refreshes the modification time of the narinfo of hashPart and
// reports whether it is still there. The publisher touches a narinfo it
// finds present before relying on it, so that prune's --grace spares a
// path that a closure being published right now reuses; a narinfo prune
// took away meanwhile reads as absent, and the path is published again.
func (c Cache) Touch(hashPart string) bool {
	now := time.Now()
	err := os.Chtimes(c.NarInfoPath(hashPart), now, now)
	return !errors.Is(err, fs.ErrNotExist)
}

// Announced reports whether the path's "published" event was acknowledged.
func (c Cache) Announced(hashPart, cid string) bool {
	b, err := os.ReadFile(filepath.Join(c.announcedDir(), hashPart))
	return err == nil && strings.TrimSpace(string(b)) == cid
}

// MarkAnnounced records that the path's "published" event was acknowledged.
// The record only spares a restart announcing the path again, which the
// stream's dedup window (or the mirrors' idempotence after it) makes
// harmless: it is written without fsyncs, which cost about an eighth of a
// small path's publish (docs/BENCHMARKS.md, section 7). Announced treats a
// record a power loss emptied as absent.
func (c Cache) MarkAnnounced(hashPart, cid string) error {
	return atomicfile.WriteHint(filepath.Join(c.announcedDir(), hashPart), []byte(cid+"\n"), 0o644)
}

// LoadSecretKey reads a Nix binary cache secret key file ("name:base64",
// as nix-store --generate-binary-cache-key writes it). A key file that
// group or others can read is refused: anyone who reads it can sign paths
// every client of the cache trusts. The key is never logged.
func LoadSecretKey(path string) (signature.SecretKey, error) {
	var zero signature.SecretKey
	fi, err := os.Stat(path)
	if err != nil {
		return zero, fmt.Errorf("secret key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return zero, fmt.Errorf("secret key %s: mode %04o lets group or others read it; chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("secret key: %w", notPermitted(path, "read", err))
	}
	sk, err := signature.LoadSecretKey(strings.TrimSpace(string(data)))
	if err != nil {
		// The error must not quote the file's contents.
		return zero, fmt.Errorf("secret key %s: not a Nix binary cache secret key (name:base64)", path)
	}
	return sk, nil
}

// notPermitted adds to a permission error what an operator needs to fix
// it: which uid this process is and who owns path. Under Compose the
// publisher runs as uid 65532, and a key file or a cache volume left from a
// root-run stack is root's (docs/OPERATIONS.md, Compose).
func notPermitted(path, what string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	owner := ""
	if fi, serr := os.Stat(path); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf(", which is uid %d's, mode %04o", st.Uid, fi.Mode().Perm())
		}
	}
	return fmt.Errorf("%w (uid %d may not %s %s%s: chown it to uid %d)", err, os.Geteuid(), what, path, owner, os.Geteuid())
}
