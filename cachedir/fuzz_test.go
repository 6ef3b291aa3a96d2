package cachedir

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNarURL: a narinfo's URL comes from a file anyone who can write the
// cache (or a mirror's event) controls. Whatever it is, a URL CheckNarURL
// accepts names a file directly inside nar/, NarPath is inside nar/ or
// empty, and NarFileHash accepts exactly the URLs NarURL makes.
func FuzzNarURL(f *testing.F) {
	for _, s := range []string{
		"nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar",
		"nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar.xz",
		"nar/../0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo", "nar/..", "nar/.", "nar/", "nar//x",
		"../nar/x.nar", "/nar/x.nar", "nar/a/b.nar", "nar/x\x00.nar", `nar/..\x`, ".nix-ipfs/announced/x",
	} {
		f.Add(s)
	}
	c := Cache{Dir: "/cache"}
	f.Fuzz(func(t *testing.T, url string) {
		p := c.NarPath(url)
		if CheckNarURL(url) != nil {
			if p != "" {
				t.Fatalf("NarPath(%q) = %q for a refused URL", url, p)
			}
		} else {
			if filepath.Dir(p) != c.NarDir() || filepath.Base(p) == ".." || filepath.Base(p) == "." {
				t.Fatalf("NarPath(%q) = %q: not a file directly in %s", url, p, c.NarDir())
			}
		}
		if h, ok := NarFileHash(url); ok {
			if CheckNarURL(url) != nil {
				t.Fatalf("NarFileHash accepts %q, CheckNarURL refuses it", url)
			}
			if NarURL(h) != url || NarURL("sha256:"+h) != url {
				t.Fatalf("NarFileHash(%q) = %q, which NarURL does not give back", url, h)
			}
		}
	})
}

// FuzzRequestPath: a request path the HTTP rules accept names a cache
// file directly in the cache or in nar/, never the state directory, a temp
// file or anything outside.
func FuzzRequestPath(f *testing.F) {
	for _, s := range []string{
		"/nix-cache-info", "/0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo",
		"/nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar.zst",
		"/nix-ipfs-mirrors.json", "/.nix-ipfs/announced/0c6kzph7l0dcbfmjap64f0czdafn3b7x",
		"/../etc/passwd", "/nar/.tmp-incoming.nar-1", "/nar/../x.narinfo",
		"/nix-ipfs-latest/proj:main:hello.json", "/nix-ipfs-latest/../x.json",
	} {
		f.Add(s)
	}
	dir := "/cache"
	f.Fuzz(func(t *testing.T, p string) {
		kinds := 0
		for _, ok := range []bool{IsCacheInfoPath(p), IsNarInfoPath(p), IsNarPath(p), IsMirrorListPath(p), IsLatestPath(p)} {
			if ok {
				kinds++
			}
		}
		if kinds == 0 {
			return
		}
		if kinds > 1 {
			t.Fatalf("%q is of %d kinds", p, kinds)
		}
		name := filepath.Join(dir, filepath.FromSlash(p[1:]))
		rel, err := filepath.Rel(dir, name)
		if err != nil || strings.HasPrefix(rel, "..") || strings.HasPrefix(rel, StateDirName) ||
			strings.Contains(rel, "/.") || strings.HasPrefix(rel, ".") || name != filepath.Clean(dir+p) {
			t.Fatalf("%q is served from %s", p, name)
		}
		if IsNarPath(p) && strings.HasSuffix(p, ".nar") {
			if _, ok := NarFileHash(p[1:]); !ok {
				t.Fatalf("%q is served as a NAR but NarFileHash refuses it", p)
			}
		}
	})
}
