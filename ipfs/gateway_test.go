package ipfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

func readerCat(t *testing.T, r *ipfs.Reader, ctx context.Context, c cid.Cid) ([]byte, error) {
	t.Helper()
	rc, err := r.Cat(ctx, c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// gatewayProxy stands in front of a kubo gateway, recording the requests
// for files and cutting the first response for a file after cut bytes
// (0: never), as a daemon that breaks off a stream would.
type gatewayProxy struct {
	*httptest.Server
	mu     sync.Mutex
	ranges []string // Range header of every /ipfs/ request but the probe's
	codes  []int    // and the status it was answered with
	cut    int64
	sent   int64 // bytes sent before the cut
}

func newGatewayProxy(t *testing.T, target string, cut int64) *gatewayProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &gatewayProxy{cut: cut}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/bafkqaaa") {
			p.mu.Lock()
			p.ranges = append(p.ranges, r.Header.Get("Range"))
			cut := p.cut
			p.cut = 0
			p.mu.Unlock()
			if cut > 0 {
				p.cutAfter(t, w, r, u, cut)
				return
			}
		}
		rec := &statusRecorder{ResponseWriter: w}
		rp.ServeHTTP(rec, r)
		if !strings.HasSuffix(r.URL.Path, "/bafkqaaa") {
			p.mu.Lock()
			p.codes = append(p.codes, rec.code)
			p.mu.Unlock()
		}
	}))
	t.Cleanup(p.Close)
	return p
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() { s.ResponseWriter.(http.Flusher).Flush() }

func (p *gatewayProxy) cutAfter(t *testing.T, w http.ResponseWriter, r *http.Request, u *url.URL, cut int64) {
	resp, err := http.Get(u.String() + r.URL.Path)
	if err != nil {
		t.Errorf("proxy: %v", err)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	n, _ := io.CopyN(w, resp.Body, cut)
	w.(http.Flusher).Flush()
	p.mu.Lock()
	p.sent = n
	p.mu.Unlock()
	// Content-Length promised more: the client sees the stream break.
	panic(http.ErrAbortHandler)
}

func (p *gatewayProxy) requests() ([]string, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ranges...), p.sent
}

// TestReaderGateway: a Reader finds the daemon's gateway (its repository's
// gateway file, or Addresses.Gateway over RPC), reads files through it,
// resumes a broken stream with a Range request, and classifies failures
// as Kubo.Cat does.
func TestReaderGateway(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx := t.Context()
	data := randomBytes(21, 8<<20)
	c, err := k.Client.Add(ctx, bytes.NewReader(data), ipfs.DefaultParams(), false)
	if err != nil {
		t.Fatal(err)
	}
	if k.Gateway == "" {
		t.Fatal("testenv: the daemon wrote no gateway file")
	}

	t.Run("found in the repository", func(t *testing.T) {
		t.Setenv("IPFS_PATH", k.Repo)
		kc, err := ipfs.Dial("")
		if err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.InfoLevel)
		r, err := ipfs.NewReader(kc, "", zap.New(core))
		if err != nil {
			t.Fatal(err)
		}
		if gw, why := r.Discover(ctx); gw != k.Gateway {
			t.Fatalf("Discover = %q (%s), want %s", gw, why, k.Gateway)
		}
		found := logs.FilterMessage("reading from kubo through its gateway").All()
		if len(found) != 1 || !strings.HasSuffix(found[0].ContextMap()["found_in"].(string), "/gateway") {
			t.Fatalf("log = %v, want the gateway found in the repository's gateway file", logs.All())
		}
		got, err := readerCat(t, r, ctx, c)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Cat through the gateway: %d bytes, %v", len(got), err)
		}
	})

	t.Run("found in Addresses.Gateway", func(t *testing.T) {
		t.Setenv("IPFS_PATH", t.TempDir()) // no api file names this daemon
		core, logs := observer.New(zap.InfoLevel)
		r, err := ipfs.NewReader(k.Client, "", zap.New(core))
		if err != nil {
			t.Fatal(err)
		}
		if gw, why := r.Discover(ctx); gw != k.Gateway {
			t.Fatalf("Discover = %q (%s), want %s", gw, why, k.Gateway)
		}
		if found := logs.FilterField(zap.String("found_in", "Addresses.Gateway")).Len(); found != 1 {
			t.Fatalf("log = %v, want the gateway found in Addresses.Gateway", logs.All())
		}
	})

	t.Run("reads go through the gateway; a broken stream resumes with Range", func(t *testing.T) {
		const cut = 3<<20 + 12345
		p := newGatewayProxy(t, k.Gateway, cut)
		r, err := ipfs.NewReader(k.Client, p.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readerCat(t, r, ctx, c)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Cat with a stream cut after %d bytes: %d bytes, %v", cut, len(got), err)
		}
		reqs, sent := p.requests()
		if sent != cut || len(reqs) != 2 || reqs[0] != "" || reqs[1] != "bytes=3158073-" {
			t.Fatalf("gateway requests %q after %d bytes sent, want a whole read then Range from byte %d", reqs, sent, cut)
		}
		if r.Resumes() != 1 {
			t.Fatalf("Resumes = %d, want 1", r.Resumes())
		}
	})

	t.Run("a CID the daemon lacks", func(t *testing.T) {
		r, err := ipfs.NewReader(k.Client, k.Gateway, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Offline, the gateway answers 404 and cat decides: the same
		// Transient failure as Kubo.Cat's.
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err = readerCat(t, r, cctx, missingCID(t))
		_, want := readerCat(t, rpcOnly(k, t), cctx, missingCID(t))
		if !errs.Is(err, errs.Transient) || errs.KindOf(err) != errs.KindOf(want) {
			t.Fatalf("Cat of a missing CID = %v (kind %s), want Transient like RPC cat's %v", err, errs.KindOf(err), want)
		}
		if r.Gateway() != k.Gateway {
			t.Fatalf("a 404 for one CID dropped the gateway")
		}
		// A deadline is the caller's, unkinded.
		dctx, dcancel := context.WithTimeout(ctx, time.Millisecond)
		defer dcancel()
		time.Sleep(2 * time.Millisecond)
		_, err = readerCat(t, r, dctx, c)
		if !errors.Is(err, context.DeadlineExceeded) || errs.KindOf(err) != errs.Other {
			t.Fatalf("Cat after the deadline = %v (kind %s), want context.DeadlineExceeded, unkinded", err, errs.KindOf(err))
		}
	})

	t.Run("gateway gone: RPC cat, the reason logged", func(t *testing.T) {
		p := newGatewayProxy(t, k.Gateway, 0)
		core, logs := observer.New(zap.InfoLevel)
		r, err := ipfs.NewReader(k.Client, p.URL, zap.New(core))
		if err != nil {
			t.Fatal(err)
		}
		if gw, _ := r.Discover(ctx); gw != p.URL {
			t.Fatalf("Discover = %q, want the proxy", gw)
		}
		p.Close()
		got, err := readerCat(t, r, ctx, c)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Cat with the gateway gone: %d bytes, %v", len(got), err)
		}
		if r.Gateway() != "" || logs.FilterMessage("not reading through kubo's gateway; using RPC cat (slower, more CPU)").Len() != 1 {
			t.Fatalf("gateway %q, log %v: want RPC cat and the reason logged", r.Gateway(), logs.All())
		}
	})

	t.Run("invalid address", func(t *testing.T) {
		if _, err := ipfs.NewReader(k.Client, "ftp://x", nil); !errs.Is(err, errs.Invalid) {
			t.Fatalf("NewReader(ftp://x) = %v, want Invalid", err)
		}
	})
}

// rpcOnly is a Reader that reads through RPC cat only.
func rpcOnly(k *testenv.Kubo, t *testing.T) *ipfs.Reader {
	r, err := ipfs.NewReader(k.Client, ipfs.GatewayOff, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReaderFallsBackToRPC: no gateway, or one that would not fetch
// missing blocks from peers (Gateway.NoFetch): reads go through RPC cat,
// and the Reader says why.
func TestReaderFallsBackToRPC(t *testing.T) {
	for name, tc := range map[string]struct {
		opt  testenv.KuboOption
		want string
	}{
		"no gateway": {testenv.KuboConfig("Addresses.Gateway", "[]"), "no gateway"},
		"NoFetch":    {testenv.KuboConfig("Gateway.NoFetch", "true"), "NoFetch"},
	} {
		t.Run(name, func(t *testing.T) {
			k := testenv.StartKubo(t, testenv.KuboOffline(), tc.opt)
			t.Setenv("IPFS_PATH", k.Repo)
			ctx := t.Context()
			data := randomBytes(22, 1<<20)
			c, err := k.Client.Add(ctx, bytes.NewReader(data), ipfs.DefaultParams(), false)
			if err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zap.InfoLevel)
			r, err := ipfs.NewReader(k.Client, "", zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			got, err := readerCat(t, r, ctx, c)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Cat: %d bytes, %v", len(got), err)
			}
			gw, why := r.Discover(ctx)
			if gw != "" || !strings.Contains(why, tc.want) {
				t.Fatalf("Discover = %q, %q; want RPC cat because of %q", gw, why, tc.want)
			}
			if logs.FilterMessage("not reading through kubo's gateway; using RPC cat (slower, more CPU)").Len() != 1 {
				t.Fatalf("log = %v, want the reason logged once", logs.All())
			}
			t.Logf("RPC cat because: %s", why)
		})
	}
}

// TestReaderGatewayFetchesFromPeers: like cat, a read through the daemon's
// gateway fetches blocks the daemon lacks from its peers.
func TestReaderGatewayFetchesFromPeers(t *testing.T) {
	_, b, c, data := peeredWithFile(t, 23, 4<<20)
	ctx := t.Context()
	// B's gateway behind a proxy that sees what it answers.
	p := newGatewayProxy(t, b.Gateway, 0)
	r, err := ipfs.NewReader(b.Client, p.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if gw, why := r.Discover(ctx); gw != p.URL {
		t.Fatalf("Discover = %q (%s), want %s", gw, why, p.URL)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := readerCat(t, r, cctx, c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Cat on B of A's file: %d bytes, %v", len(got), err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.codes) != 1 || p.codes[0] != http.StatusOK {
		t.Fatalf("B's gateway answered %v, want one 200 (not RPC cat after a refusal)", p.codes)
	}
}
