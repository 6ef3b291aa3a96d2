package cachedir

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// The names of a binary cache directory, as `nix copy --to file://DIR`
// writes them and Nix's http:// binary cache store asks for them.
const (
	// CacheInfoName is the cache's description ("StoreDir: /nix/store").
	CacheInfoName = "nix-cache-info"
	// NarInfoExt ends every narinfo's name: <hashpart>.narinfo.
	NarInfoExt = ".narinfo"
	// NarDirName holds the NARs: nar/<filehash>.nar[.ext].
	NarDirName = "nar"
	// LatestDirName holds each job's latest-build document (package
	// latest): nix-ipfs-latest/<job>.json, served like any cache file.
	LatestDirName = "nix-ipfs-latest"
	// StateDirName holds this project's own state next to the cache, never
	// served: the announced marks, prune's roots and journal, a mirror
	// cache's NAR index.
	StateDirName = ".nix-ipfs"
)

// Paths inside StateDirName, relative to the cache directory (slash-separated).
const (
	// AnnouncedDir holds the publisher's marks, one file per hash part
	// holding the CID whose "published" event the stream acknowledged.
	AnnouncedDir = StateDirName + "/announced"
	// JournalDir holds the narinfos (and NARs) a prune moved out of the
	// cache and has not finished retiring.
	JournalDir = StateDirName + "/retiring"
	// RootsFile is where prune remembers the roots.
	RootsFile = StateDirName + "/roots.json"
	// MirrorIndexDir is a mirror cache's index: one file per NAR file hash
	// holding the hash part whose narinfo names it. A mirror keeps no NAR
	// files (its NARs are in kubo), so it finds the narinfo this way.
	MirrorIndexDir = StateDirName + "/nar"
)

// nix32 is Nix's base-32 alphabet: no e, o, u, t.
const nix32 = "0123456789abcdfghijklmnpqrsvwxyz"

// NarURL is the URL, relative to the cache, of the uncompressed NAR whose
// FileHash (= NarHash with compression=none) is fileHash, given either as
// "sha256:<nix32>" or as the bare nix32 digest: nar/<nix32>.nar.
func NarURL(fileHash string) string {
	return NarDirName + "/" + strings.TrimPrefix(fileHash, "sha256:") + ".nar"
}

// NarFileHash returns the nix32 SHA-256 of an uncompressed NAR's URL
// "nar/<52 nix32>.nar", and false for anything else (a compressed NAR, a
// URL outside nar/).
func NarFileHash(url string) (string, bool) {
	h, ok := strings.CutPrefix(url, NarDirName+"/")
	if !ok {
		return "", false
	}
	h, ok = strings.CutSuffix(h, ".nar")
	if !ok || len(h) != 52 || strings.Trim(h, nix32) != "" {
		return "", false
	}
	return h, true
}

// CheckNarURL refuses a narinfo's URL that does not name a file directly
// inside nar/: a narinfo read from the cache must never lead a reader or a
// prune to a file elsewhere (another cache file, the state directory, a
// temp file, or outside the cache). Compressed NARs (nar/<hash>.nar.xz)
// pass.
func CheckNarURL(url string) error {
	name, ok := strings.CutPrefix(url, NarDirName+"/")
	if !ok || name == "" || name[0] == '.' || strings.Contains(name, "/") || strings.Contains(name, "..") ||
		strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("URL %q is not under nar/", url)
	}
	return nil
}

// NarInfoName is the file name of the narinfo of the path with hashPart.
func NarInfoName(hashPart string) string { return hashPart + NarInfoExt }

// HTTP request paths (decoded, with their leading slash) a cache answers:
// anything else, the state directory and temp files included, is not a
// cache file.
var (
	narInfoPathRE = regexp.MustCompile(`^/[0-9a-df-np-sv-z]{32}\.narinfo$`)
	narPathRE     = regexp.MustCompile(`^/nar/[0-9a-df-np-sv-z]{52}\.nar(\.xz|\.zst|\.bz2|\.br|\.lz4|\.lzip)?$`)
)

// IsCacheInfoPath reports whether an HTTP request path names nix-cache-info.
func IsCacheInfoPath(p string) bool { return p == "/"+CacheInfoName }

// IsNarInfoPath reports whether an HTTP request path names a narinfo:
// /<32 nix32 chars>.narinfo.
func IsNarInfoPath(p string) bool { return narInfoPathRE.MatchString(p) }

// IsNarPath reports whether an HTTP request path names a NAR:
// /nar/<52 nix32 chars>.nar, optionally with a compression's extension.
func IsNarPath(p string) bool { return narPathRE.MatchString(p) }

// latestJobRE is the job names a latest-build document may have (package
// latest's rule): no slash, no leading dot, so a name never leaves
// LatestDirName.
var latestJobRE = regexp.MustCompile(`^[A-Za-z0-9_+][A-Za-z0-9._+:-]{0,254}$`)

// ValidJob reports whether job can name a latest-build document.
func ValidJob(job string) bool { return latestJobRE.MatchString(job) }

// LatestName is the path of job's latest-build document, relative to the
// cache (slash-separated), or "" for a job name that cannot be one.
func LatestName(job string) string {
	if !ValidJob(job) {
		return ""
	}
	return LatestDirName + "/" + job + ".json"
}

// IsLatestPath reports whether an HTTP request path names a latest-build
// document: /nix-ipfs-latest/<job>.json.
func IsLatestPath(p string) bool {
	rest, ok := strings.CutPrefix(p, "/"+LatestDirName+"/")
	if !ok {
		return false
	}
	job, ok := strings.CutSuffix(rest, ".json")
	return ok && ValidJob(job)
}

// IsMirrorListPath reports whether an HTTP request path names the cache's
// mirror list.
func IsMirrorListPath(p string) bool { return p == "/"+mirrorlist.FileName }
