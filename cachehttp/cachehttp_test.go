package cachehttp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestHandlerServesOnlyCacheFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("key"), 0o600)
	files := map[string]string{
		"nix-cache-info": "StoreDir: /nix/store\n",
		"0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo":                     "StorePath: x\n",
		"nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar": "NAR",
		".nix-ipfs/announced/0c6kzph7l0dcbfmjap64f0czdafn3b7x":         "state",
		"nar/.tmp-incoming.nar-1":                                      "half",
		"nix-ipfs-mirrors.json":                                        `{"type":"nixipfs.mirrors.v1","mirrors":[]}`,
		".tmp-nix-ipfs-mirrors.json-1":                                 "half",
		"nix-ipfs-latest/proj:main:hello.json":                         `{}`,
		"nix-ipfs-latest/.tmp-proj:main:hello.json-1":                  "half",
	}
	for n, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755)
		os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
	}
	os.Symlink(secret, filepath.Join(dir, "1b9p07z77phvv2hf6gm9f28syp39f1ag.narinfo"))
	srv := httptest.NewServer(Handler(dir))
	defer srv.Close()

	get := func(p string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+p, nil)
		req.URL.Opaque = p // send the path exactly as written
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/nix-cache-info", "/0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo", "/nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar", "/nix-ipfs-mirrors.json", "/nix-ipfs-latest/proj:main:hello.json"} {
		if code, _ := get(p); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
	for _, p := range []string{
		"/", "/.nix-ipfs/announced/0c6kzph7l0dcbfmjap64f0czdafn3b7x", "/nar/.tmp-incoming.nar-1",
		"/../" + filepath.Base(secret), "/%2e%2e/etc/passwd", "/nar/..%2f..%2fetc%2fpasswd",
		"/%252e%252e/etc/passwd", "/0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo/", "/0C6KZPH7L0DCBFMJAP64F0CZDAFN3B7X.narinfo",
		"/nar\\..\\x", "//etc/passwd", "/0c6kzph7l0dcbfmjap64f0czdafn3b7%78.narinfo",
		"/1b9p07z77phvv2hf6gm9f28syp39f1ag.narinfo", // a symlink out of the cache
		"/.tmp-nix-ipfs-mirrors.json-1", "/nix-ipfs-mirrors.json/", "/nar/nix-ipfs-mirrors.json", "/NIX-IPFS-MIRRORS.JSON",
		"/nix-ipfs-latest/.tmp-proj:main:hello.json-1", "/nix-ipfs-latest/../nix-cache-info", "/nix-ipfs-latest/a/b.json",
		"/nix-ipfs-latest/", "/nix-ipfs-latest/.json",
	} {
		if code, body := get(p); code == 200 || body == "key" || body == "state" || body == "half" {
			t.Errorf("%s: served (%d %q)", p, code, body)
		}
	}
	resp, _ := http.Post(srv.URL+"/nix-cache-info", "text/plain", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}
