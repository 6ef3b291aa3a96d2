package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// startMirrorCache runs `nix-ipfs mirror --cache-dir DIR --listen` on kubo
// k and returns the process and the URL it serves its cache on.
func startMirrorCache(t *testing.T, bin, natsURL string, k *testenv.Kubo, name, dir string) (*testenv.Proc, string) {
	t.Helper()
	p := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"mirror", "--name", name, "--ack-wait", "10s",
		"--cache-dir", dir, "--listen", "127.0.0.1:0", "--metrics-addr", freeAddr(t)}, mirEnv(natsURL, k.API)...)
	re := regexp.MustCompile(`mirror cache listening\s.*"addr": "([^"]+)"`)
	var url string
	testenv.Eventually(t, 30*time.Second, "the mirror's cache listening", func() bool {
		b, _ := os.ReadFile(p.Log)
		if m := re.FindSubmatch(b); m != nil {
			url = "http://" + string(m[1])
		}
		return url != "" && httpOK(url+"/nix-cache-info")
	})
	return p, url
}

func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestCacheWithoutOrigin is the proof that no client depends on host A.
// A builds and publishes a closure; mirror B pins it and keeps the narinfos
// (--cache-dir), serving them (--listen). B's nix-cache-info and narinfos
// must be A's byte for byte, A's IPFSSig lines included (published.v3
// carries them). Then A's HTTP server and kubo stop and A's
// cache directory is deleted, and stock Nix, trusting only A's key, copies
// the whole closure into fresh stores:
//   - from B's cache directly;
//   - through a substituter whose first upstream is the dead A and whose
//     second is B, which marks A down once and serves everything from B's
//     narinfos and IPFS, streaming each CID at once because B's narinfos
//     carry A's IPFSSig.
func TestCacheWithoutOrigin(t *testing.T) {
	a := newHostA(t)
	a.startPublisher(t)
	b := testenv.StartKubo(t)
	bDir := filepath.Join(t.TempDir(), "cache-b")
	_, bURL := startMirrorCache(t, a.bin, a.nats.URL, b, "b", bDir)

	top := a.nix.Build(t, richClosure(testenv.Nonce()))[0]
	closure := closureOf(t, a.nix, top)
	a.waitPublished(t, closure, 2*time.Minute)
	testenv.Eventually(t, 2*time.Minute, "B's cache holds every narinfo", func() bool {
		return countNarinfos(bDir, closure) == len(closure)
	})

	aSrv := httptest.NewServer(http.FileServer(http.Dir(a.cache)))
	for _, f := range append([]string{"nix-cache-info"}, hashParts(closure)...) {
		want, err := os.ReadFile(filepath.Join(a.cache, f))
		if err != nil {
			t.Fatal(err)
		}
		code, got := httpGet(t, bURL+"/"+f)
		if code != 200 || !bytes.Equal(got, want) {
			t.Errorf("%s from B's cache (HTTP %d) differs from A's:\n%s\n--- A ---\n%s", f, code, got, want)
		}
	}

	// A disappears: HTTP server, kubo, cache directory, publisher.
	aURL := aSrv.URL
	aSrv.Close()
	a.kubo.Stop(t)
	a.pub.Signal(15)
	a.pub.Wait(30 * time.Second)
	if err := os.RemoveAll(a.cache); err != nil {
		t.Fatal(err)
	}

	t.Run("FromMirror", func(t *testing.T) {
		checkStockNixCopy(t, a, top, bURL)
	})

	// A new mirror C, from the stream alone: replay pins every CID (from
	// B, A being gone) and keeps every narinfo, A's byte for byte.
	t.Run("ReplayFillsNewMirror", func(t *testing.T) {
		c := testenv.StartKubo(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		selfB, err := b.Client.Self(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Client.Connect(ctx, selfB); err != nil {
			t.Fatal(err)
		}
		cDir := filepath.Join(t.TempDir(), "cache-c")
		mirMustRun(t, a.bin, mirEnv(a.nats.URL, c.API), "replay", "--mirror", "c", "--all", "--progress", "none",
			"--state-file", filepath.Join(t.TempDir(), "c.seq"), "--cache-dir", cDir)
		for _, f := range hashParts(closure) {
			want, _ := os.ReadFile(filepath.Join(bDir, f))
			got, err := os.ReadFile(filepath.Join(cDir, f))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s in C's cache (%v) differs from B's (A's)", f, err)
			}
		}
	})

	t.Run("SubstituterDeadOriginFirst", func(t *testing.T) {
		s := startSubstituterProc(t, a.bin, aURL, "--upstream", bURL, "--kubo-api", b.API, "--failover-timeout", "2s",
			"--trusted-public-keys", a.nix.PublicKey)
		checkStockNixCopy(t, a, top, s.URL)
		s.waitNars(t, float64(len(closure)), `source="ipfs"`)
		for _, p := range closure {
			if !s.logHas(t, `NAR served.*"store_path": "`+regexp.QuoteMeta(p)+`".*"trust": "signed".*"source": "ipfs"`) {
				t.Errorf("%s: B's narinfo did not let the client trust its CID as signed", p)
			}
		}
		if !s.logHas(t, `upstream down; asking the others.*"upstream": "`+regexp.QuoteMeta(aURL)) {
			t.Errorf("the substituter did not report A down")
		}
		if got := scrapeGauge(t, s.metrics, "nixipfs_substituter_upstream_up", `upstream="`+aURL+`"`); got != 0 {
			t.Errorf("upstream_up for dead A = %v, want 0", got)
		}
	})
}

func hashParts(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, storepath.HashPart(p)+".narinfo")
	}
	return out
}

// scrapeGauge reads a gauge like scrapeCounter reads a counter.
func scrapeGauge(t *testing.T, url, name string, labels ...string) float64 {
	t.Helper()
	return scrapeCounter(t, url, name, labels...)
}

// TestCacheAsIPFSDirectory: with --mfs-dir the publisher keeps the cache as
// a UnixFS directory in kubo's MFS and announces its root; mirror B pins
// the latest root. With A gone (kubo, publisher, cache directory), stock
// Nix uses B's plain kubo gateway as its substituter,
// http://GATEWAY/ipfs/<root>, with nothing of nix-ipfs on the client, and
// copies the whole closure trusting only A's key.
func TestCacheAsIPFSDirectory(t *testing.T) {
	a := newHostA(t)
	a.startPublisher(t, "--mfs-dir", "/nix-cache", "--mfs-announce-every", "500ms")
	b := testenv.StartKubo(t)
	testenv.StartProc(t, filepath.Join(a.bin, "nix-ipfs"), []string{"mirror", "--name", "b", "--ack-wait", "10s"},
		mirEnv(a.nats.URL, b.API)...)
	_, js := a.nats.Connect(t)

	top := a.nix.Build(t, richClosure(testenv.Nonce()))[0]
	closure := closureOf(t, a.nix, top)
	a.waitPublished(t, closure, 2*time.Minute)

	// The latest announced root is A's current directory, and B pins it.
	var root string
	testenv.Eventually(t, 2*time.Minute, "B pins A's current cache root", func() bool {
		evs := streamEvents(t, js, events.SubjectCacheRoot)
		if len(evs) == 0 {
			return false
		}
		root = evs[len(evs)-1].(*events.CacheRoot).Root
		cur := strings.Fields(a.kubo.IPFS(t, "files", "stat", "--hash", "/nix-cache"))
		if len(cur) == 0 || cur[0] != root {
			return false
		}
		return strings.Contains(b.IPFS(t, "pin", "ls", "--type=recursive", "--names"), root+" recursive nix-ipfs-cache-root")
	})

	a.kubo.Stop(t)
	a.pub.Signal(15)
	a.pub.Wait(30 * time.Second)
	if err := os.RemoveAll(a.cache); err != nil {
		t.Fatal(err)
	}
	gw, err := os.ReadFile(filepath.Join(b.Repo, "gateway"))
	if err != nil {
		t.Fatalf("kubo B's gateway address: %v", err)
	}
	url := strings.TrimSpace(string(gw)) + "/ipfs/" + root
	if code, body := httpGet(t, url+"/nix-cache-info"); code != 200 || string(body) != "StoreDir: /nix/store\n" {
		t.Fatalf("nix-cache-info through B's gateway: %d %q", code, body)
	}
	checkStockNixCopy(t, a, top, url)
}
