// Package cachedir owns a file:// binary cache directory: its layout, the
// order its files are written and removed in, and the listing others read.
// The publisher writes it, retention prunes it, a mirror keeps its own
// copy (mirrorcache), and cachehttp serves it; each calls this package
// instead of spelling a path.
//
// # Layout
//
// As `nix copy --to file://DIR?compression=none` lays it out:
//
//	DIR/nix-cache-info             "StoreDir: /nix/store"
//	DIR/nix-ipfs-mirrors.json      the mirrors (package mirrorlist)
//	DIR/<hashpart>.narinfo         one per store path
//	DIR/nar/<filehash>.nar         the NAR a narinfo's URL names
//	DIR/.nix-ipfs/                 this project's state, never served:
//	  announced/<hashpart>           the publisher's marks (the acked CID)
//	  retiring/                      prune's journal (narinfos, NARs)
//	  roots.json                     prune's roots
//	  nar/<filehash>                 a mirror cache's NAR index
//
// # Invariants
//
// Every file others read is written atomically (internal/atomicfile): a
// reader sees no file, the old one or the whole new one, never a part.
// A narinfo is never visible without its NAR: the NAR is in place and
// synced (CreateNAR, then Commit into NarPath) before its narinfo is
// written (WriteNarInfo); retiring goes the other way, narinfo first
// (Withdraw), then NAR (WithdrawNAR). A narinfo's URL must name a file
// directly inside nar/ (CheckNarURL). The publisher and prune share the
// directory without a lock, through the grace handshake (grace.go).
package cachedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/perm"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Cache is a binary cache directory. The zero StoreDir is only for readers
// (retention), which never create the cache.
type Cache struct {
	Dir      string
	StoreDir string
}

// Open creates the directories of a publisher's cache and its
// nix-cache-info if missing, refuses a cache for another store, and
// removes what a crashed writer left (CleanStale).
func (c Cache) Open() error {
	if err := c.open("cache", c.Dir, c.NarDir(), c.path(AnnouncedDir)); err != nil {
		return err
	}
	c.CleanStale()
	return nil
}

// OpenMirror is Open for a mirror's cache, which keeps no NAR files but an
// index from NAR to narinfo (MirrorIndexDir).
func (c Cache) OpenMirror() error {
	if err := c.open("mirror cache", c.path(MirrorIndexDir)); err != nil {
		return err
	}
	for _, d := range []string{c.Dir, c.path(MirrorIndexDir)} {
		atomicfile.Clean(d, atomicfile.StaleAfter) // younger ones may be a live writer's
	}
	return nil
}

// open makes dirs and checks (or writes) nix-cache-info; what names the
// cache in errors.
func (c Cache) open(what string, dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("%s %s: %w", what, c.Dir, perm.Hint(c.Dir, "write", err))
		}
	}
	info := c.CacheInfoPath()
	if _, err := os.Stat(info); errors.Is(err, fs.ErrNotExist) {
		// Exactly what Nix's BinaryCacheStore::init writes.
		if err := atomicfile.WriteFile(info, []byte("StoreDir: "+c.StoreDir+"\n"), 0o644); err != nil {
			return fmt.Errorf("%s %s: %w", what, c.Dir, perm.Hint(c.Dir, "write", err))
		}
		return nil
	} else if err != nil {
		return fmt.Errorf("%s %s: %w", what, c.Dir, err)
	}
	data, err := os.ReadFile(info)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, c.Dir, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "StoreDir: "); ok && v != c.StoreDir {
			return errs.Errorf(errs.Invalid, "%s %s is for store %s, not %s", what, c.Dir, v, c.StoreDir)
		}
	}
	return nil
}

// CleanStale removes what a crashed writer left half-written: temp files
// not written for atomicfile.StaleAfter. They were never visible. Younger
// ones may be another live publisher's, sharing this cache.
func (c Cache) CleanStale() {
	for _, d := range []string{c.Dir, c.NarDir()} {
		atomicfile.Clean(d, atomicfile.StaleAfter)
	}
}

// path is rel (slash-separated, relative to the cache) on disk.
func (c Cache) path(rel string) string { return filepath.Join(c.Dir, filepath.FromSlash(rel)) }

// CacheInfoPath is where nix-cache-info lives.
func (c Cache) CacheInfoPath() string { return c.path(CacheInfoName) }

// NarDir is the directory of the NARs.
func (c Cache) NarDir() string { return c.path(NarDirName) }

// MirrorListPath is where the cache's mirror list lives (package
// mirrorlist writes it), next to nix-cache-info.
func (c Cache) MirrorListPath() string { return mirrorlist.Path(c.Dir) }

// StatePath is where a file of the state directory lives; rel is one of
// AnnouncedDir, JournalDir, RootsFile, MirrorIndexDir, or below them.
func (c Cache) StatePath(rel string) string { return c.path(rel) }

// NarInfoPath is where the narinfo of the path with hashPart lives, and
// "" (which names no file) for a hashPart that is not 32 nix32 characters:
// a name from outside never leads elsewhere.
func (c Cache) NarInfoPath(hashPart string) string {
	if storepath.ValidateHashPart(hashPart) != nil {
		return ""
	}
	return filepath.Join(c.Dir, NarInfoName(hashPart))
}

// NarPath is where the NAR with URL "nar/<x>" lives, and "" (which names
// no file) for a URL CheckNarURL refuses: a narinfo's URL never leads
// outside nar/.
func (c Cache) NarPath(url string) string {
	if CheckNarURL(url) != nil {
		return ""
	}
	return c.path(url)
}

// CreateNAR starts the write of a NAR whose name (its hash) is known only
// once it is written: a temp file in nar/, to Commit (or CommitGrouped)
// into NarPath(NarURL(hash)) before the narinfo naming it is written.
func (c Cache) CreateNAR() (*atomicfile.File, error) {
	return atomicfile.Create(filepath.Join(c.NarDir(), "incoming.nar"), 0o644)
}

// WriteNarInfo writes the narinfo of hashPart atomically, its directory
// sync grouped through s (nil: a sync of its own). Its NAR must be in
// place and synced already: no reader may see a narinfo without its NAR.
func (c Cache) WriteNarInfo(hashPart string, text []byte, s *atomicfile.DirSyncer) error {
	if err := storepath.ValidateHashPart(hashPart); err != nil {
		return errs.E(errs.Invalid, err)
	}
	if s == nil {
		return atomicfile.WriteFile(c.NarInfoPath(hashPart), text, 0o644)
	}
	return atomicfile.WriteFileGrouped(c.NarInfoPath(hashPart), text, 0o644, s)
}

// ReadNarInfoBytes returns the narinfo file of hashPart, or nil if absent.
func (c Cache) ReadNarInfoBytes(hashPart string) ([]byte, error) {
	b, err := os.ReadFile(c.NarInfoPath(hashPart))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.E(errs.Transient, err)
	}
	return b, nil
}

// ReadNarInfo returns the cache's narinfo for hashPart, or nil if absent
// or unreadable (the publisher replaces it by a good one).
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

// Announced reports whether the path's "published" event was acknowledged
// for this CID.
func (c Cache) Announced(hashPart, cid string) bool {
	b, err := os.ReadFile(c.announcedPath(hashPart))
	return err == nil && strings.TrimSpace(string(b)) == cid
}

// MarkAnnounced records that the path's "published" event was acknowledged.
// The record only spares a restart announcing the path again, which the
// stream's dedup window (or the mirrors' idempotence after it) makes
// harmless: it is written without fsyncs, which cost about an eighth of a
// small path's publish (docs/BENCHMARKS.md, section 7). Announced treats a
// record a power loss emptied as absent.
func (c Cache) MarkAnnounced(hashPart, cid string) error {
	if err := storepath.ValidateHashPart(hashPart); err != nil {
		return errs.E(errs.Invalid, err)
	}
	return atomicfile.WriteHint(c.announcedPath(hashPart), []byte(cid+"\n"), 0o644)
}

func (c Cache) announcedPath(hashPart string) string {
	if storepath.ValidateHashPart(hashPart) != nil {
		return ""
	}
	return filepath.Join(c.path(AnnouncedDir), hashPart)
}

// WriteMirrorIndex records that the narinfo of hashPart names the NAR with
// fileHash. A mirror writes it before the narinfo, so a narinfo is never
// visible without the way to its NAR.
func (c Cache) WriteMirrorIndex(fileHash, hashPart string) error {
	if _, ok := NarFileHash(NarURL(fileHash)); !ok {
		return errs.Errorf(errs.Invalid, "mirror index: %q is not a NAR's file hash", fileHash)
	}
	if err := storepath.ValidateHashPart(hashPart); err != nil {
		return errs.E(errs.Invalid, err)
	}
	return atomicfile.WriteFile(filepath.Join(c.path(MirrorIndexDir), fileHash), []byte(hashPart+"\n"), 0o644)
}

// MirrorIndex returns the hash part the mirror index names for fileHash.
func (c Cache) MirrorIndex(fileHash string) (string, bool) {
	if _, ok := NarFileHash(NarURL(fileHash)); !ok {
		return "", false
	}
	b, err := os.ReadFile(filepath.Join(c.path(MirrorIndexDir), fileHash))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// DropMirrorIndex removes the index entry of fileHash if it still names
// hashPart: another path with the very same NAR may own it now. A mirror
// removes the narinfo first.
func (c Cache) DropMirrorIndex(fileHash, hashPart string) {
	if hp, ok := c.MirrorIndex(fileHash); ok && hp == hashPart {
		os.Remove(filepath.Join(c.path(MirrorIndexDir), fileHash))
	}
}

// RemoveNarInfo removes the narinfo of hashPart; removing what is not
// there is no error.
func (c Cache) RemoveNarInfo(hashPart string) error {
	if err := os.Remove(c.NarInfoPath(hashPart)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// LatestPath is where job's latest-build document lives, or "" for a job
// name that cannot be one.
func (c Cache) LatestPath(job string) string {
	n := LatestName(job)
	if n == "" {
		return ""
	}
	return c.path(n)
}

// ReadLatest returns job's latest-build document, or nil if there is none.
func (c Cache) ReadLatest(job string) ([]byte, error) {
	p := c.LatestPath(job)
	if p == "" {
		return nil, errs.Errorf(errs.Invalid, "job %q cannot name a latest-build document", job)
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.E(errs.Transient, err)
	}
	return b, nil
}

// WriteLatest replaces job's latest-build document atomically. Whether
// doc is newer than the one in place is the caller's to decide (package
// latest), under a lock of its own if several writers may race.
func (c Cache) WriteLatest(job string, doc []byte) error {
	p := c.LatestPath(job)
	if p == "" {
		return errs.Errorf(errs.Invalid, "job %q cannot name a latest-build document", job)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return errs.E(errs.Transient, err)
	}
	if err := atomicfile.WriteFile(p, doc, 0o644); err != nil {
		return errs.E(errs.Transient, err)
	}
	return nil
}

// LatestJobs lists the jobs with a latest-build document.
func (c Cache) LatestJobs() ([]string, error) {
	ents, err := os.ReadDir(c.path(LatestDirName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var jobs []string
	for _, e := range ents {
		if job, ok := strings.CutSuffix(e.Name(), ".json"); ok && ValidJob(job) && e.Type().IsRegular() {
			jobs = append(jobs, job)
		}
	}
	return jobs, nil
}
