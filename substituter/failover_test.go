package substituter

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// hungServer accepts connections and answers nothing until revived; then
// it serves dir. It counts the requests other than the probes'.
type hungServer struct {
	srv   *httptest.Server
	asked atomic.Int32
	mu    sync.Mutex
	alive bool
}

func newHungServer(t *testing.T, dir string) *hungServer {
	h := &hungServer{}
	files := http.FileServer(http.Dir(dir))
	release := make(chan struct{})
	var once sync.Once
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/nix-cache-info" {
			h.asked.Add(1)
		}
		h.mu.Lock()
		alive := h.alive
		h.mu.Unlock()
		if !alive {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		files.ServeHTTP(w, r)
	}))
	h.srv.Start()
	t.Cleanup(func() { once.Do(func() { close(release) }); h.srv.Close() })
	return h
}

func (h *hungServer) revive() {
	h.mu.Lock()
	h.alive = true
	h.mu.Unlock()
}

// TestFailoverHungOrigin: the first upstream accepts connections and never
// answers. The first request waits one failover timeout, then gets its
// answer from the second upstream; later requests do not touch the first
// at all. Once it answers again, the background probe brings it back.
func TestFailoverHungOrigin(t *testing.T) {
	var hung *hungServer
	originDir := t.TempDir()
	f := newFixture(t, func(o *Options) {
		// The fixture's cache directory is the mirror (second upstream);
		// the origin serves a copy of it once revived.
		hung = newHungServer(t, originDir)
		o.Upstreams = []string{o.Upstream}
		o.Upstream = hung.srv.URL
		o.FailoverTimeout = 300 * time.Millisecond
		o.ProbeInterval = 50 * time.Millisecond
		o.NegativeTTL = -1
		o.NarinfoTTL = -1
	})
	var paths []*storePath
	for i := 0; i < 5; i++ {
		paths = append(paths, f.addPath("fo"+string(rune('a'+i)), payload("fo"+string(rune('a'+i)), 300), nil))
	}
	for i, p := range paths {
		resp, b := f.mustGet(http.MethodGet, p.narinfoPath())
		if resp.StatusCode != 200 || string(b) != p.ni.String() {
			t.Fatalf("narinfo %d through failover: %d %q", i, resp.StatusCode, b)
		}
		resp, b = f.mustGet(http.MethodGet, p.narPath())
		if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
			t.Fatalf("NAR %d: %d", i, resp.StatusCode)
		}
	}
	if n := hung.asked.Load(); n != 1 {
		t.Errorf("the hung origin was asked %d times for 5 narinfos and NARs; want once, then left out", n)
	}
	if g := gaugeValue(t, f, "nixipfs_substituter_upstream_up", hung.srv.URL); g != 0 {
		t.Errorf("upstream_up{%s} = %v, want 0", hung.srv.URL, g)
	}

	// The origin comes back with its own copy of the cache: the probe
	// notices, and it is asked first again.
	copyDir(t, f.dir, originDir)
	hung.revive()
	deadline := time.Now().Add(10 * time.Second)
	for gaugeValue(t, f, "nixipfs_substituter_upstream_up", hung.srv.URL) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the revived origin is not back in use")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := f.hitsOf(paths[0].narinfoPath())
	if resp, _ := f.mustGet(http.MethodGet, paths[0].narinfoPath()); resp.StatusCode != 200 {
		t.Fatalf("narinfo after the origin came back: %d", resp.StatusCode)
	}
	if f.hitsOf(paths[0].narinfoPath()) != before {
		t.Errorf("the mirror was asked although the origin is back and first")
	}
}

// TestFailoverMissingFiles: an origin that is up but has lost files (404)
// is not marked down, and each file comes from the upstream that has it:
// narinfos and NARs (proxied, checked against the narinfo) alike.
func TestFailoverMissingFiles(t *testing.T) {
	origin := t.TempDir()
	f := newFixture(t, func(o *Options) {
		o.Upstreams = []string{o.Upstream}
		o.Upstream = "file://" + origin
	})
	os.WriteFile(filepath.Join(origin, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	p := f.addPath("noipfs", payload("noipfs", 1000), func(ni *narinfo.NarInfo) { ni.IPFSHash = "" })
	resp, b := f.mustGet(http.MethodGet, p.narinfoPath())
	if resp.StatusCode != 200 || string(b) != p.ni.String() {
		t.Fatalf("narinfo only the mirror has: %d %q", resp.StatusCode, b)
	}
	resp, b = f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("NAR only the mirror has: %d", resp.StatusCode)
	}
	resp, _ = f.mustGet(http.MethodGet, "/"+hp32+".narinfo")
	if resp.StatusCode != 404 {
		t.Errorf("a narinfo neither has: %d, want 404", resp.StatusCode)
	}
	if g := gaugeValue(t, f, "nixipfs_substituter_upstream_up", "file://"+origin); g != 1 {
		t.Errorf("an origin that answers 404 was marked down")
	}
}

// TestNarIndexServesColdNAR: with NarIndex, a NAR asked for before its
// narinfo (a client that cached the narinfo across a restart) is still
// checked and served from IPFS.
func TestNarIndexServesColdNAR(t *testing.T) {
	var index sync.Map
	f := newFixture(t, func(o *Options) {
		o.NarIndex = func(narPath string) (string, bool) {
			v, ok := index.Load(narPath)
			if !ok {
				return "", false
			}
			return v.(string), true
		}
	})
	p := f.addPath("cold", payload("cold", 2000), nil)
	os.Remove(filepath.Join(f.dir, p.ni.URL)) // only IPFS has it
	index.Store(p.narPath(), p.narinfoPath())
	resp, b := f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("cold NAR: %d", resp.StatusCode)
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", SourceIPFS)
}

func gaugeValue(t *testing.T, f *fixture, name, upstream string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelValue(m, "upstream") == upstream {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
