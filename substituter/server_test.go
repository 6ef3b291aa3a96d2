package substituter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/upstream"
)

const (
	hp32  = "0123456789abcdfghijklmnpqrsvwxyz" // 32 chars of Nix's base 32
	nar52 = "0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk"
)

// TestPathValidation: only the three kinds of cache path are served, and
// no traversal or odd encoding reaches upstream or the disk.
func TestPathValidation(t *testing.T) {
	f := newFixture(t, nil)
	// A file outside the cache that a traversal would reach.
	secret := filepath.Join(filepath.Dir(f.dir), "secret.narinfo")
	os.WriteFile(secret, []byte("secret"), 0o644)

	for _, tc := range []struct {
		target string
		want   int // 0: served (any status upstream decides); else the refusal
	}{
		{"/nix-cache-info", 0},
		{"/" + hp32 + ".narinfo", 0},
		{"/nar/" + nar52 + ".nar", 0},
		{"/nar/" + nar52 + ".nar.xz", 0},
		{"/nar/" + nar52 + ".nar.zst", 0},
		{"/nar/" + nar52 + ".nar.bz2", 0},
		{"/", 404},
		{"/index.html", 404},
		{"/nix-cache-info/", 404},
		{"/nix-cache-info.bak", 404},
		{"/" + hp32 + ".narinfo.bak", 404},
		{"/" + hp32[:31] + ".narinfo", 404},
		{"/" + hp32 + "0.narinfo", 404},
		{"/" + strings.Replace(hp32, "0", "e", 1) + ".narinfo", 404}, // e is not in Nix's base 32
		{"/" + strings.ToUpper(hp32) + ".narinfo", 404},
		{"/nar/" + nar52 + ".nar.gzip", 404},
		{"/nar/" + nar52[:51] + ".nar", 404},
		{"/nar/" + hp32 + ".narinfo", 404},
		{"/log/" + hp32 + "-x.drv", 404},
		{"/" + hp32 + ".ls", 404},
		{"/../secret.narinfo", 400},
		{"/nar/../" + hp32 + ".narinfo", 400},
		{"/./" + hp32 + ".narinfo", 400},
		{"/%2e%2e/secret.narinfo", 400},
		{"/%2E%2E/secret.narinfo", 400},
		{"/nar/%2e%2e/%2e%2e/secret.narinfo", 400},
		{"/%252e%252e/secret.narinfo", 400},
		{"/%25252e%25252e/secret.narinfo", 400},
		{"/..%2fsecret.narinfo", 400},
		{"/nar%2f" + nar52 + ".nar", 400},
		{"/%" + hp32 + ".narinfo", 400},
		{"/" + hp32 + "%2enarinfo", 400},
		{"/..\\secret.narinfo", 400},
		{"/nar\\..\\..\\secret.narinfo", 400},
		{"/%5c..%5csecret.narinfo", 400},
		{"//" + hp32 + ".narinfo", 400},
		{"/nar//" + nar52 + ".nar", 400},
		{"http://example.com/../secret.narinfo", 400},
		{"http://example.com/" + strings.Replace(hp32, "0", "9", 1) + ".narinfo", 0},
		{"/" + hp32 + ".narinfo%00", 400},
		{"/" + hp32 + "%0a.narinfo", 400},
	} {
		t.Run(tc.target, func(t *testing.T) {
			before := f.totalHits()
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			f.srv.ServeHTTP(w, r)
			if tc.want == 0 {
				if w.Code == 400 || (w.Code == 404 && f.totalHits() == before) {
					t.Errorf("GET %s: %d without asking upstream; want it served", tc.target, w.Code)
				}
				return
			}
			if w.Code != tc.want {
				t.Errorf("GET %s: %d, want %d", tc.target, w.Code, tc.want)
			}
			if f.totalHits() != before {
				t.Errorf("GET %s reached upstream", tc.target)
			}
			if strings.Contains(w.Body.String(), "secret") && !strings.Contains(w.Body.String(), "Bad Request") {
				t.Errorf("GET %s: body %q", tc.target, w.Body.String())
			}
		})
	}

	// The same over a real connection, with request targets Go's client
	// would normalise: written by hand.
	for _, target := range []string{"/../secret.narinfo", "/%2e%2e/secret.narinfo", "/..\\secret.narinfo", "/%252e%252e/secret.narinfo", "/x/../../secret.narinfo"} {
		status := rawGet(t, f.http.Listener.Addr().String(), target)
		if status != 400 {
			t.Errorf("raw GET %s: %d, want 400", target, status)
		}
	}

	// Mounted under a prefix as `nix-ipfs up` does.
	mux := http.NewServeMux()
	mux.Handle("/substituter/", http.StripPrefix("/substituter", f.srv))
	for target, want := range map[string]int{
		"/substituter/%2e%2e/secret.narinfo":         400,
		"/substituter/..%2f..%2fsecret.narinfo":      400,
		"/substituter/" + hp32 + "%2enarinfo":        400,
		"/substituter/" + hp32 + ".narinfo":          404, // upstream has no such narinfo
		"/substituter/nar/../../../secret.narinfo":   0,   // ServeMux cleans and redirects
		"/substituter/nix-cache-info":                200,
		"/substituter/nar/" + nar52 + ".nar.unknown": 404,
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
		if want != 0 && w.Code != want {
			t.Errorf("mounted GET %s: %d, want %d", target, w.Code, want)
		}
		if strings.Contains(w.Body.String(), "secret") && w.Code == 200 {
			t.Errorf("mounted GET %s served %q", target, w.Body.String())
		}
	}

	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, "PROPFIND"} {
		w := httptest.NewRecorder()
		f.srv.ServeHTTP(w, httptest.NewRequest(m, "/nix-cache-info", nil))
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d Allow=%q", m, w.Code, w.Header().Get("Allow"))
		}
	}
	if got := f.metric("nixipfs_substituter_rejected_requests_total", "code", "400"); got == 0 {
		t.Errorf("rejections not counted")
	}
}

// rawGet sends target as written and returns the response status.
func rawGet(t *testing.T, addr, target string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("raw GET %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFileUpstreamStaysInside: a file:// upstream is read through an
// os.Root, so a symlink in the cache pointing outside is not followed.
func TestFileUpstreamStaysInside(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	os.MkdirAll(filepath.Join(cache, "nar"), 0o755)
	os.WriteFile(filepath.Join(dir, "outside"), []byte("outside the cache"), 0o644)
	os.WriteFile(filepath.Join(cache, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	os.Symlink("../outside", filepath.Join(cache, hp32+".narinfo"))
	os.Symlink("../../outside", filepath.Join(cache, "nar", nar52+".nar"))
	srv, err := New(Options{Upstream: "file://" + cache, IPFS: newFakeIPFS(), SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, p := range []string{"/" + hp32 + ".narinfo", "/nar/" + nar52 + ".nar"} {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, p, nil))
		if w.Code == 200 || strings.Contains(w.Body.String(), "outside") {
			t.Errorf("GET %s: %d %q: followed a symlink out of the cache", p, w.Code, w.Body.String())
		}
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/nix-cache-info", nil))
	if w.Code != 200 || w.Body.String() != "StoreDir: /nix/store\n" {
		t.Errorf("nix-cache-info from file://: %d %q", w.Code, w.Body.String())
	}
}

// TestFileUpstream: narinfos and the NAR fallback work from a directory.
func TestFileUpstream(t *testing.T) {
	f := newFixture(t, nil) // only for its directory and addPath
	p := f.addPath("hello", payload("hello", 3000), func(ni *narinfo.NarInfo) { ni.IPFSHash = "" })
	srv, err := New(Options{Upstream: "file://" + f.dir, IPFS: newFakeIPFS(), SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()
	for path, want := range map[string][]byte{
		p.narinfoPath(): []byte(p.ni.String()),
		p.narPath():     p.nar,
	} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(b, want) {
			t.Errorf("GET %s: %d, %d bytes", path, resp.StatusCode, len(b))
		}
	}
	resp, err := http.Get(hs.URL + "/" + hp32 + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // or its connection outlives the test (goleak)
	if resp.StatusCode != 404 {
		t.Errorf("missing narinfo from file://: %d", resp.StatusCode)
	}
}

// TestNarinfoCache: narinfos are served untouched from memory for
// NarinfoTTL, 404s for NegativeTTL, and concurrent misses share one fetch.
func TestNarinfoCache(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.NarinfoTTL = time.Hour; o.NegativeTTL = time.Minute })
	// The clock is read by the reads ahead the narinfos start, too.
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	f.srv.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	p := f.addPath("cached", payload("cached", 100), func(ni *narinfo.NarInfo) {
		ni.Sigs = []string{"test-1:" + strings.Repeat("A", 86) + "=="}
		ni.Extra = []narinfo.Field{{Key: "X-Unknown", Value: "kept: as is"}}
	})
	text, _ := os.ReadFile(filepath.Join(f.dir, p.hashPart+".narinfo"))

	for i := 0; i < 3; i++ {
		resp, b := f.mustGet(http.MethodGet, p.narinfoPath())
		if resp.StatusCode != 200 || !bytes.Equal(b, text) {
			t.Fatalf("GET narinfo: %d\n%s\nwant\n%s", resp.StatusCode, b, text)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/x-nix-narinfo" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	if n := f.hitsOf(p.narinfoPath()); n != 1 {
		t.Errorf("upstream asked %d times for a cached narinfo, want 1", n)
	}

	missing := "/" + hp32 + ".narinfo"
	for i := 0; i < 3; i++ {
		if resp, _ := f.mustGet(http.MethodGet, missing); resp.StatusCode != 404 {
			t.Fatalf("missing narinfo: %d", resp.StatusCode)
		}
	}
	if n := f.hitsOf(missing); n != 1 {
		t.Errorf("upstream asked %d times for a missing narinfo, want 1 (negative cache)", n)
	}

	// The negative entry expires first; the positive one later.
	advance(2 * time.Minute)
	f.mustGet(http.MethodGet, missing)
	f.mustGet(http.MethodGet, p.narinfoPath())
	if a, b := f.hitsOf(missing), f.hitsOf(p.narinfoPath()); a != 2 || b != 1 {
		t.Errorf("after the negative TTL: %d and %d upstream hits, want 2 and 1", a, b)
	}
	// Once published upstream, the path appears when its 404 expires.
	f.write(hp32+".narinfo", text)
	if resp, _ := f.mustGet(http.MethodGet, missing); resp.StatusCode != 404 {
		t.Errorf("negative entry not served from memory: %d", resp.StatusCode)
	}
	advance(2 * time.Hour)
	if resp, _ := f.mustGet(http.MethodGet, missing); resp.StatusCode != 200 {
		t.Errorf("path published upstream still 404 after the negative TTL: %d", resp.StatusCode)
	}
	f.mustGet(http.MethodGet, p.narinfoPath())
	if n := f.hitsOf(p.narinfoPath()); n != 2 {
		t.Errorf("after the TTL: %d upstream hits, want 2", n)
	}

	// nix-cache-info too, untouched.
	for i := 0; i < 2; i++ {
		resp, b := f.mustGet(http.MethodGet, "/nix-cache-info")
		if resp.StatusCode != 200 || string(b) != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n" {
			t.Errorf("nix-cache-info: %d %q", resp.StatusCode, b)
		}
	}
	if n := f.hitsOf("/nix-cache-info"); n != 1 {
		t.Errorf("nix-cache-info fetched %d times", n)
	}
	if f.metric("nixipfs_substituter_narinfos_total", "result", "hit") < 2 ||
		f.metric("nixipfs_substituter_narinfos_total", "result", "negative_hit") < 2 {
		t.Errorf("narinfo cache hits not counted")
	}

	// Concurrent misses: one upstream request.
	slow := "/" + strings.Replace(hp32, "0", "1", 1) + ".narinfo"
	release := make(chan struct{})
	f.mu.Lock()
	f.override[slow] = func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Write(text)
	}
	f.mu.Unlock()
	done := make(chan int, 5)
	for i := 0; i < 5; i++ {
		go func() {
			resp, _, err := f.get(http.MethodGet, slow)
			if err != nil {
				done <- 0
				return
			}
			done <- resp.StatusCode
		}()
	}
	testEventually(t, func() bool { return f.hitsOf(slow) == 1 })
	close(release)
	for i := 0; i < 5; i++ {
		if c := <-done; c != 200 {
			t.Errorf("concurrent GET: %d", c)
		}
	}
	if n := f.hitsOf(slow); n != 1 {
		t.Errorf("%d upstream requests for 5 concurrent misses", n)
	}
}

func testEventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNoCaching: negative TTLs turn the caches off.
func TestNoCaching(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.NarinfoTTL = -1; o.NegativeTTL = -1 })
	p := f.addPath("nocache", payload("nocache", 10), nil)
	missing := "/" + hp32 + ".narinfo"
	for i := 0; i < 2; i++ {
		f.mustGet(http.MethodGet, p.narinfoPath())
		f.mustGet(http.MethodGet, missing)
	}
	if a, b := f.hitsOf(p.narinfoPath()), f.hitsOf(missing); a != 2 || b != 2 {
		t.Errorf("caching disabled, yet %d and %d upstream hits for 2 requests each", a, b)
	}
	// The NAR is still matched with its narinfo.
	resp, b := f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Errorf("NAR: %d", resp.StatusCode)
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "ipfs")
}

// TestSizeBounds: a narinfo of up to 1 MiB is served; a larger one is
// refused (502) without being held or cached.
func TestSizeBounds(t *testing.T) {
	f := newFixture(t, nil)
	exact := "/" + hp32 + ".narinfo"
	over := "/" + strings.Replace(hp32, "0", "1", 1) + ".narinfo"
	f.write(exact[1:], bytes.Repeat([]byte("x"), MaxNarinfoSize))
	f.write(over[1:], bytes.Repeat([]byte("x"), MaxNarinfoSize+1))
	resp, b := f.mustGet(http.MethodGet, exact)
	if resp.StatusCode != 200 || len(b) != MaxNarinfoSize {
		t.Errorf("narinfo of exactly %d bytes: %d, %d bytes", MaxNarinfoSize, resp.StatusCode, len(b))
	}
	for i := 0; i < 2; i++ {
		if resp, _ := f.mustGet(http.MethodGet, over); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("narinfo over %d bytes: %d, want 502", MaxNarinfoSize, resp.StatusCode)
		}
	}
	if n := f.hitsOf(over); n != 2 {
		t.Errorf("oversized narinfo fetched %d times; it must not be cached", n)
	}
	// A narinfo streamed without a length, endless.
	endless := "/" + strings.Replace(hp32, "0", "2", 1) + ".narinfo"
	f.mu.Lock()
	f.override[endless] = func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("y"), 64<<10)
		for i := 0; i < 1000; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	f.mu.Unlock()
	if resp, _ := f.mustGet(http.MethodGet, endless); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("endless narinfo: %d", resp.StatusCode)
	}
	f.write("nix-cache-info", bytes.Repeat([]byte("z"), MaxCacheInfoSize+1))
	if resp, _ := f.mustGet(http.MethodGet, "/nix-cache-info"); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("oversized nix-cache-info: %d", resp.StatusCode)
	}
	// Upstream errors are 502 and not cached.
	broken := "/" + strings.Replace(hp32, "0", "3", 1) + ".narinfo"
	f.mu.Lock()
	f.override[broken] = func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) }
	f.mu.Unlock()
	for i := 0; i < 2; i++ {
		if resp, _ := f.mustGet(http.MethodGet, broken); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("upstream 503: %d", resp.StatusCode)
		}
	}
	if f.hitsOf(broken) != 2 {
		t.Errorf("upstream error was cached")
	}
}

// TestHead: HEAD answers like GET without a body, and HEAD of a NAR whose
// narinfo is known costs no IPFS fetch.
func TestHead(t *testing.T) {
	f := newFixture(t, nil)
	p := f.addPath("head", payload("head", 5000), nil)
	resp, b := f.mustGet(http.MethodHead, p.narinfoPath())
	if resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(p.ni.String())) {
		t.Errorf("HEAD narinfo: %d, %d body bytes, length %d", resp.StatusCode, len(b), resp.ContentLength)
	}
	resp, b = f.mustGet(http.MethodHead, p.narPath())
	if resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(p.nar)) {
		t.Errorf("HEAD NAR: %d, %d body bytes, length %d", resp.StatusCode, len(b), resp.ContentLength)
	}
	if f.ipfs.calls() != 0 || f.hitsOf(p.narPath()) != 0 {
		t.Errorf("HEAD of a NAR fetched it (ipfs %d, upstream %d)", f.ipfs.calls(), f.hitsOf(p.narPath()))
	}
	resp, _ = f.mustGet(http.MethodHead, "/nix-cache-info")
	if resp.StatusCode != 200 || resp.ContentLength <= 0 {
		t.Errorf("HEAD nix-cache-info: %d %d", resp.StatusCode, resp.ContentLength)
	}
	resp, _ = f.mustGet(http.MethodHead, "/"+hp32+".narinfo")
	if resp.StatusCode != 404 {
		t.Errorf("HEAD missing narinfo: %d", resp.StatusCode)
	}
	// HEAD of a NAR no narinfo named: upstream's answer.
	other := f.addPath("unannounced", payload("unannounced", 700), nil)
	resp, b = f.mustGet(http.MethodHead, other.narPath())
	if resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != 700 {
		t.Errorf("HEAD unknown NAR: %d, %d bytes, length %d", resp.StatusCode, len(b), resp.ContentLength)
	}
	resp, _ = f.mustGet(http.MethodHead, "/nar/"+nar52+".nar")
	if resp.StatusCode != 404 {
		t.Errorf("HEAD missing NAR: %d", resp.StatusCode)
	}
}

// TestNarFromIPFS: with the narinfo served, the NAR comes from IPFS,
// checked, with Content-Length NarSize; upstream's NAR is not touched.
func TestNarFromIPFS(t *testing.T) {
	f := newFixture(t, nil)
	p := f.addPath("from-ipfs", payload("from-ipfs", 300000), nil)
	f.mustGet(http.MethodGet, p.narinfoPath())
	resp, b := f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("NAR: %d, %d bytes", resp.StatusCode, len(b))
	}
	if resp.ContentLength != int64(len(p.nar)) || resp.Header.Get("Content-Type") != narContentType {
		t.Errorf("headers: length %d, type %q", resp.ContentLength, resp.Header.Get("Content-Type"))
	}
	if n := f.hitsOf(p.narPath()); n != 0 {
		t.Errorf("upstream NAR fetched %d times", n)
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "ipfs")
	f.waitMetric(float64(len(p.nar)), "nixipfs_substituter_nar_bytes_total", "source", "ipfs")
	// A resumed download (Range) is answered from the checked copy.
	req, _ := http.NewRequest(http.MethodGet, f.http.URL+p.narPath(), nil)
	req.Header.Set("Range", "bytes=1000-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, p.nar[1000:]) {
		t.Errorf("Range: %d, %d bytes", resp.StatusCode, len(b))
	}
	// Nothing is left in the spool directory.
	entries, _ := os.ReadDir(f.srv.opts.SpoolDir)
	if len(entries) != 0 {
		t.Errorf("spool directory holds %d files", len(entries))
	}
}

// TestNarFallback: every way IPFS can fail or be skipped ends with the
// upstream NAR, counted and labelled with the reason.
func TestNarFallback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		opts   func(*Options)
		setup  func(f *fixture, nar []byte) func(*narinfo.NarInfo)
	}{
		{name: "hash mismatch", reason: ReasonHashMismatch, setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
			// Other bytes of the same size under the CID in IPFSHash.
			bad := bytes.Clone(nar)
			bad[len(bad)/2] ^= 1
			return func(ni *narinfo.NarInfo) { f.ipfs.put(rawCID(bad), bad); ni.IPFSHash = rawCID(bad).String() }
		}},
		{name: "shorter", reason: ReasonSizeMismatch, setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
			short := nar[:len(nar)-1]
			return func(ni *narinfo.NarInfo) { f.ipfs.put(rawCID(short), short); ni.IPFSHash = rawCID(short).String() }
		}},
		{name: "longer", reason: ReasonSizeMismatch, setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
			long := append(bytes.Clone(nar), 0)
			return func(ni *narinfo.NarInfo) { f.ipfs.put(rawCID(long), long); ni.IPFSHash = rawCID(long).String() }
		}},
		{name: "ipfs error", reason: ReasonIPFSError, setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
			f.ipfs.err = errors.New("kubo unreachable")
			return nil
		}},
		{name: "timeout", reason: ReasonTimeout, opts: func(o *Options) { o.IPFSTimeout = 50 * time.Millisecond },
			setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
				f.ipfs.hang = true
				return nil
			}},
		{name: "no ipfshash", reason: ReasonNoIPFSHash, setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
			return func(ni *narinfo.NarInfo) { ni.IPFSHash = "" }
		}},
		{name: "invalid cid", reason: ReasonInvalidCID, setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
			return func(ni *narinfo.NarInfo) { ni.IPFSHash = "not-a-cid" }
		}},
		{name: "spool full", reason: ReasonSpoolFull, opts: func(o *Options) { o.MaxSpoolBytes = 1000 },
			setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) { return nil }},
		{name: "compressed", reason: ReasonCompressed, setup: func(f *fixture, nar []byte) func(*narinfo.NarInfo) {
			return func(ni *narinfo.NarInfo) { ni.Compression = "xz"; ni.URL += ".xz" }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts)
			nar := payload(tc.name, 200000)
			p := f.addPath("fallback", nar, tc.setup(f, nar))
			if resp, _ := f.mustGet(http.MethodGet, p.narinfoPath()); resp.StatusCode != 200 {
				t.Fatalf("narinfo: %d", resp.StatusCode)
			}
			resp, b := f.mustGet(http.MethodGet, p.narPath())
			if resp.StatusCode != 200 || !bytes.Equal(b, nar) {
				t.Fatalf("NAR: %d, %d bytes", resp.StatusCode, len(b))
			}
			if n := f.hitsOf(p.narPath()); n != 1 {
				t.Errorf("upstream NAR fetched %d times", n)
			}
			f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "upstream", "reason", tc.reason)
			if got := f.metric("nixipfs_substituter_nars_total", "source", "ipfs"); got != 0 {
				t.Errorf("nars_total{source=ipfs} = %v", got)
			}
			if tc.reason != ReasonNoIPFSHash && tc.reason != ReasonCompressed {
				if got := f.metric("nixipfs_substituter_ipfs_failures_total", "reason", tc.reason); got != 1 {
					t.Errorf("ipfs_failures_total{reason=%s} = %v", tc.reason, got)
				}
			}
		})
	}

	t.Run("unknown narinfo", func(t *testing.T) {
		f := newFixture(t, nil)
		p := f.addPath("unannounced", payload("unannounced", 1234), nil)
		resp, b := f.mustGet(http.MethodGet, p.narPath())
		if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) || f.ipfs.calls() != 0 {
			t.Errorf("NAR without narinfo: %d, %d bytes, %d IPFS calls", resp.StatusCode, len(b), f.ipfs.calls())
		}
		f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "upstream", "reason", ReasonUnknownNarinfo)
		resp, _ = f.mustGet(http.MethodGet, "/nar/"+nar52+".nar")
		if resp.StatusCode != 404 {
			t.Errorf("missing NAR: %d", resp.StatusCode)
		}
	})
}

// TestUpstreamMismatchCut: when IPFS fails and the upstream NAR does not
// match the narinfo either, the client never gets a complete response.
func TestUpstreamMismatchCut(t *testing.T) {
	f := newFixture(t, nil)
	f.ipfs.err = errors.New("ipfs down")
	nar := payload("cut", 500000)
	p := f.addPath("cut", nar, nil)
	f.mustGet(http.MethodGet, p.narinfoPath())

	// Same length, other bytes: known only at the end.
	bad := bytes.Clone(nar)
	bad[len(bad)-1] ^= 1
	f.write(p.ni.URL, bad)
	resp, b, err := f.get(http.MethodGet, p.narPath())
	if err == nil && resp.StatusCode == 200 && len(b) == len(nar) {
		t.Fatalf("a NAR that does not match its narinfo was served whole")
	}
	if err == nil && resp.StatusCode == 200 {
		t.Errorf("truncated body without an error: %d of %d bytes", len(b), len(nar))
	}
	f.waitMetric(1, "nixipfs_substituter_upstream_verify_failures_total")

	// Wrong length announced: refused before any byte.
	f.write(p.ni.URL, nar[:len(nar)-10])
	resp, _ = f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("upstream NAR of the wrong size: %d", resp.StatusCode)
	}

	// Chunked, no length, too long: cut too.
	f.mu.Lock()
	f.override[p.narPath()] = func(w http.ResponseWriter, r *http.Request) {
		w.Write(nar)
		w.(http.Flusher).Flush()
		w.Write([]byte("extra"))
	}
	f.mu.Unlock()
	resp, b, err = f.get(http.MethodGet, p.narPath())
	if err == nil && resp.StatusCode == 200 && len(b) == len(nar) {
		t.Fatalf("an over-long NAR was served as complete")
	}

	// And when upstream is right, the fallback succeeds with its length.
	f.mu.Lock()
	delete(f.override, p.narPath())
	f.mu.Unlock()
	f.write(p.ni.URL, nar)
	resp, b = f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, nar) || resp.ContentLength != int64(len(nar)) {
		t.Errorf("good upstream NAR: %d, %d bytes, length %d", resp.StatusCode, len(b), resp.ContentLength)
	}
	f.waitMetric(3, "nixipfs_substituter_nars_total", "source", "none")
}

// TestUnverifiedProxyCut: a NAR passed through unchecked (no narinfo) whose
// upstream transfer breaks is cut too, not ended as if complete.
func TestUnverifiedProxyCut(t *testing.T) {
	f := newFixture(t, nil)
	path := "/nar/" + nar52 + ".nar"
	f.mu.Lock()
	f.override[path] = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(make([]byte, 50000))
		panic(http.ErrAbortHandler)
	}
	f.mu.Unlock()
	resp, b, err := f.get(http.MethodGet, path)
	if err == nil {
		t.Errorf("broken upstream transfer looked complete: %d, %d bytes", resp.StatusCode, len(b))
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Upstream: "http://x"},
		{Upstream: "ftp://x", IPFS: newFakeIPFS()},
		{Upstream: "http://", IPFS: newFakeIPFS()},
		{Upstream: "http://x?y=1", IPFS: newFakeIPFS()},
		{Upstream: "file:///nonexistent/dir", IPFS: newFakeIPFS()},
		{Upstream: "http://x", IPFS: newFakeIPFS(), SpoolDir: "/dev/null"},
		{Upstream: "http://x", IPFS: newFakeIPFS(), SpoolDir: "/dev/null/spool"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestNewCreatesSpoolDir: a NAR spool directory that does not exist yet is
// created, as the hook creates its event spool.
func TestNewCreatesSpoolDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "nars")
	srv, err := New(Options{Upstream: "http://x", IPFS: newFakeIPFS(), SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if st, err := os.Stat(dir); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("spool dir: %v %v", st, err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Upstreams: config.Strings{"http://x", "http://y"}, UpstreamOrder: upstream.OrderPriority, FailoverTimeout: time.Second,
		Listen: "127.0.0.1:0", IPFSTimeout: time.Second, UpstreamTimeout: time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*Config){
		func(c *Config) { c.Upstreams = nil },
		func(c *Config) { c.Upstreams = config.Strings{"http://x", "ftp://y"} },
		func(c *Config) { c.UpstreamOrder = "random" },
		func(c *Config) { c.FailoverTimeout = 0 },
		func(c *Config) { c.Gateway, c.KuboAPI = "http://g", "http://k" },
		func(c *Config) { c.Gateway = "ftp://g" },
		func(c *Config) { c.Listen = "nohostport" },
		func(c *Config) { c.IPFSTimeout = 0 },
		func(c *Config) { c.MaxSpoolBytes = -1 },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", c)
		}
	}
}

// TestNarTableBounded: the NAR table forgets the least recently used
// entry beyond MaxNars; a forgotten NAR is still served, from upstream.
func TestNarTableBounded(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxNars = 2; o.MaxNarinfos = 2 })
	var ps []*storePath
	for i := 0; i < 3; i++ {
		p := f.addPath("bounded"+strconv.Itoa(i), payload("bounded"+strconv.Itoa(i), 100), nil)
		f.mustGet(http.MethodGet, p.narinfoPath())
		ps = append(ps, p)
	}
	if n := f.srv.nars.Len(); n != 2 {
		t.Errorf("NAR table holds %d entries, bound 2", n)
	}
	if n := f.srv.meta.Len(); n != 2 {
		t.Errorf("narinfo table holds %d entries, bound 2", n)
	}
	resp, b := f.mustGet(http.MethodGet, ps[0].narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, ps[0].nar) {
		t.Errorf("forgotten NAR: %d", resp.StatusCode)
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "reason", ReasonUnknownNarinfo)
}

// TestSharedRegistry: two Servers on one registry share the counters.
func TestSharedRegistry(t *testing.T) {
	f := newFixture(t, nil)
	srv2, err := New(Options{Upstream: f.up.URL, IPFS: f.ipfs, Registerer: f.reg, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	w := httptest.NewRecorder()
	srv2.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/nope", nil))
	f.srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/nope", nil))
	if got := f.metric("nixipfs_substituter_rejected_requests_total", "code", "404"); got != 2 {
		t.Errorf("rejected_requests_total{code=404} = %v across two servers, want 2", got)
	}
}

// TestRangeOnFallback: a resumed download that must come from upstream is
// passed through as a range, not answered with the whole NAR.
func TestRangeOnFallback(t *testing.T) {
	f := newFixture(t, nil)
	f.ipfs.err = errors.New("ipfs down")
	p := f.addPath("range", payload("range", 10000), nil)
	f.mustGet(http.MethodGet, p.narinfoPath())
	req, _ := http.NewRequest(http.MethodGet, f.http.URL+p.narPath(), nil)
	req.Header.Set("Range", "bytes=4000-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, p.nar[4000:]) ||
		!strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes 4000-9999/10000") {
		t.Errorf("Range on fallback: %d, %d bytes, Content-Range %q", resp.StatusCode, len(b), resp.Header.Get("Content-Range"))
	}
}

// TestServesTheMirrorList: the substituter passes the upstream's mirror
// list on, so it (or a mirror's cache built on it) can be another's
// upstream; without one it answers 404 like any missing file.
func TestServesTheMirrorList(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	srv, err := New(Options{Upstream: "file://" + dir, IPFS: newFakeIPFS(), SpoolDir: t.TempDir(), NegativeTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	get := func() (int, string, string) {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+mirrorlist.FileName, nil))
		return rec.Code, rec.Header().Get("Content-Type"), rec.Body.String()
	}
	if code, _, _ := get(); code != http.StatusNotFound {
		t.Errorf("no list upstream: %d", code)
	}
	want, err := (&mirrorlist.List{Type: mirrorlist.Type, Mirrors: []mirrorlist.Mirror{{Name: "b",
		PeerID: "12D3KooWJyLvsygSJX92sA6Jiu6vgH3ddDPvCi73KDnNkh5yc6Rf", Addrs: []string{"/ip4/1.2.3.4/tcp/4001"}}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, mirrorlist.FileName), want, 0o644)
	if code, ctype, body := get(); code != 200 || ctype != "application/json" || body != string(want) {
		t.Errorf("list: %d %s %q", code, ctype, body)
	}
	for _, p := range []string{"/nix-ipfs-mirrors.json/", "/x/nix-ipfs-mirrors.json", "/NIX-IPFS-MIRRORS.JSON", "/nix-ipfs-mirrors.jsonx"} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code == 200 {
			t.Errorf("%s served", p)
		}
	}
}
