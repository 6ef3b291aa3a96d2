package substituter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// fixture is a Server over an upstream cache directory served by an
// httptest server that counts requests per path, and a fake IPFS.
type fixture struct {
	t    *testing.T
	dir  string
	up   *httptest.Server
	ipfs *fakeIPFS
	reg  *prometheus.Registry
	srv  *Server
	http *httptest.Server

	mu   sync.Mutex
	hits map[string]int
	// override, if set for a path, answers instead of the directory.
	override map[string]http.HandlerFunc
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), ipfs: newFakeIPFS(), reg: prometheus.NewRegistry(),
		hits: map[string]int{}, override: map[string]http.HandlerFunc{}}
	if err := os.MkdirAll(filepath.Join(f.dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.write("nix-cache-info", []byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"))
	files := http.FileServer(http.Dir(f.dir))
	f.up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hits[r.URL.Path]++
		h := f.override[r.URL.Path]
		f.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(f.up.Close)
	opts := Options{
		Upstream:   f.up.URL,
		IPFS:       f.ipfs,
		Log:        zaptest.NewLogger(t),
		Registerer: f.reg,
		SpoolDir:   t.TempDir(),
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	f.srv = srv
	f.http = httptest.NewServer(srv)
	t.Cleanup(f.http.Close)
	return f
}

func (f *fixture) write(rel string, b []byte) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, rel), b, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) hitsOf(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[path]
}

func (f *fixture) totalHits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, v := range f.hits {
		n += v
	}
	return n
}

// storePath is a path in the fixture cache.
type storePath struct {
	hashPart string
	nar      []byte
	ni       *narinfo.NarInfo
	cid      cid.Cid
}

func (p *storePath) narinfoPath() string { return "/" + p.hashPart + ".narinfo" }
func (p *storePath) narPath() string     { return "/" + p.ni.URL }

// addPath writes a narinfo and NAR for name into the upstream cache and
// puts the NAR into the fake IPFS under a CID named in IPFSHash. mod may
// change the narinfo before it is written.
func (f *fixture) addPath(name string, nar []byte, mod func(*narinfo.NarInfo)) *storePath {
	f.t.Helper()
	h := sha256.Sum256([]byte(name))
	hp := nixbase32.EncodeToString(h[:20])
	sum := sha256.Sum256(nar)
	nix32 := nixbase32.EncodeToString(sum[:])
	c := rawCID(nar)
	ni := &narinfo.NarInfo{
		StorePath:   "/nix/store/" + hp + "-" + name,
		URL:         "nar/" + nix32 + ".nar",
		Compression: "none",
		FileHash:    "sha256:" + nix32,
		FileSize:    uint64(len(nar)),
		NarHash:     "sha256:" + nix32,
		NarSize:     uint64(len(nar)),
		IPFSHash:    c.String(),
	}
	if mod != nil {
		mod(ni)
	}
	f.write(hp+".narinfo", []byte(ni.String()))
	f.write(ni.URL, nar)
	f.ipfs.put(c, nar)
	return &storePath{hashPart: hp, nar: nar, ni: ni, cid: c}
}

func rawCID(b []byte) cid.Cid {
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(b)
	if err != nil {
		panic(err)
	}
	return c
}

// get requests path from the substituter over real HTTP.
func (f *fixture) get(method, path string) (*http.Response, []byte, error) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// mustGet is get that fails the test on a transport error.
func (f *fixture) mustGet(method, path string) (*http.Response, []byte) {
	f.t.Helper()
	resp, b, err := f.get(method, path)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// metric returns the value of counter name with labels, 0 if absent.
func (f *fixture) metric(name string, labels ...string) float64 {
	f.t.Helper()
	return gatherCounter(f.t, f.reg, name, labels...)
}

// waitMetric waits for counter name with labels to reach want: a response
// is counted once the handler returns, which may be just after the client
// has read the last byte.
func (f *fixture) waitMetric(want float64, name string, labels ...string) bool {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := f.metric(name, labels...)
		if got == want {
			return true
		}
		if time.Now().After(deadline) {
			f.t.Errorf("%s%v = %v, want %v", name, labels, got, want)
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func gatherCounter(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				if labelValue(m, k) != v {
					continue metrics
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// fakeIPFS serves content by CID, or misbehaves as told.
type fakeIPFS struct {
	mu      sync.Mutex
	content map[string][]byte
	err     error // returned by every Cat
	hang    bool  // Cat blocks until its context ends
	cats    int
	// serve, if set, answers Cat instead: call counts from 1, b is the
	// content put under c (nil if none).
	serve func(call int, c cid.Cid, b []byte) (io.ReadCloser, error)
	// catted is signalled (without blocking) at every Cat.
	catted chan cid.Cid
}

func newFakeIPFS() *fakeIPFS { return &fakeIPFS{content: map[string][]byte{}} }

func (f *fakeIPFS) put(c cid.Cid, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.content[c.String()] = b
}

func (f *fakeIPFS) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cats
}

func (f *fakeIPFS) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	f.mu.Lock()
	f.cats++
	err, hang, b, ok := f.err, f.hang, f.content[c.String()], f.content[c.String()] != nil
	serve, call, catted := f.serve, f.cats, f.catted
	f.mu.Unlock()
	if catted != nil {
		select {
		case catted <- c:
		default:
		}
	}
	if serve != nil {
		return serve(call, c, b)
	}
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("fake ipfs: %s not found", c)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// payload returns n deterministic bytes that differ with seed.
func payload(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		s := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", seed, i)))
		b.Write(s[:])
	}
	return b.Bytes()[:n]
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
