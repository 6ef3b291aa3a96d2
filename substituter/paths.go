package substituter

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// The only paths served. Nix's base-32 alphabet has no e, o, u or t, so a
// match can hold neither a dot segment, a slash nor an escape.
var (
	narinfoPath = regexp.MustCompile(`^/[0-9a-df-np-sv-z]{32}\.narinfo$`)
	narPath     = regexp.MustCompile(`^/nar/[0-9a-df-np-sv-z]{52}\.nar(\.xz|\.zst|\.bz2)?$`)
)

const cacheInfoPath = "/nix-cache-info"

type kind int

const (
	kindNone kind = iota
	kindCacheInfo
	kindNarinfo
	kindNar
	kindMirrorList
	kindLatest
)

// classify says what r asks for, or why it is refused: 400 for a path no
// cache could hold (escapes, dot segments, backslashes, control bytes), 404
// for a well-formed path this cache does not serve.
func classify(r *http.Request) (kind, int) {
	// RawPath is set only when the request escaped something that did not
	// need escaping (%2e, %2F, %25...): nothing a cache path needs.
	if r.URL.RawPath != "" || r.URL.Opaque != "" {
		return kindNone, http.StatusBadRequest
	}
	p := r.URL.Path
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\%\x00") || strings.Contains(p, "//") ||
		hasDotSegment(p) || strings.IndexFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f }) >= 0 {
		return kindNone, http.StatusBadRequest
	}
	switch {
	case p == cacheInfoPath:
		return kindCacheInfo, 0
	case narinfoPath.MatchString(p):
		return kindNarinfo, 0
	case narPath.MatchString(p):
		return kindNar, 0
	case p == "/"+mirrorlist.FileName:
		return kindMirrorList, 0
	case cachedir.IsLatestPath(p):
		return kindLatest, 0
	}
	return kindNone, http.StatusNotFound
}

func hasDotSegment(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// narKey is the key of a narinfo's URL in the NAR table: the path Nix will
// request, without the query some caches add (harmonia's ?hash=...). ok is
// false for URLs this server would refuse to serve.
func narKey(u string) (string, bool) {
	p, _, _ := strings.Cut(u, "?")
	p = "/" + p
	return p, narPath.MatchString(p)
}
