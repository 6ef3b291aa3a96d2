package substituter

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// FuzzClassify: whatever the request target, a path that is served is one
// of the three cache shapes, with nothing that could name another file.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"/nix-cache-info", "/" + hp32 + ".narinfo", "/nar/" + nar52 + ".nar.xz",
		"/%2e%2e/x", "/..\\x", "//x", "/nar/../x.narinfo", "http://h/" + hp32 + ".narinfo"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		k, code := classify(&http.Request{Method: http.MethodGet, URL: u})
		if k == kindNone {
			if code != http.StatusBadRequest && code != http.StatusNotFound {
				t.Fatalf("%q: refused with %d", target, code)
			}
			return
		}
		p := u.Path
		if strings.Contains(p, "..") || strings.ContainsAny(p, "\\%\x00") || u.RawPath != "" {
			t.Fatalf("%q served as %v (path %q)", target, k, p)
		}
		if !(p == cacheInfoPath || narinfoPath.MatchString(p) || narPath.MatchString(p) || p == "/"+mirrorlist.FileName) {
			t.Fatalf("%q served as %v", target, k)
		}
	})
}
