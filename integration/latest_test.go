package integration

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/latest"
)

// TestLatestBuildForPullDeployments: builds of one job go through the real
// hook; the publisher keeps the job's latest-build document in its cache,
// signed, and a mirror's cache holds the same bytes. A fleet host asks
// `nix-ipfs latest` for the job through its substituter (whose upstream is
// the mirror), gets the newest build's outputs once the signature checks,
// and copies them with stock Nix through the substituter. An unknown key,
// an older document replayed in place of the newer, and garbage are each
// refused with a clear error.
func TestLatestBuildForPullDeployments(t *testing.T) {
	a := newHostA(t)
	a.startPublisher(t)
	b := testenv.StartKubo(t)
	bDir := filepath.Join(t.TempDir(), "cache-b")
	_, bURL := startMirrorCache(t, a.bin, a.nats.URL, b, "b", bDir)

	nonce := testenv.Nonce()
	build := func(version string) string {
		leaf := testenv.Drv("fleetlib-"+version+"-"+nonce, `mkdir -p $out; echo lib `+version+` > $out/lib`, "")
		return a.nix.Build(t, `let lib = `+leaf+`; in `+testenv.Drv("fleetapp-"+version+"-"+nonce,
			`mkdir -p $out/bin; echo "${lib}" > $out/bin/app`, `inherit lib;`))[0]
	}
	const job = "fleetapp"
	aCache := cachedir.Cache{Dir: a.cache}
	waitLatest := func(c cachedir.Cache, out string) []byte {
		t.Helper()
		var raw []byte
		testenv.Eventually(t, 2*time.Minute, "the latest-build document names "+out, func() bool {
			raw, _ = c.ReadLatest(job)
			d, err := latest.Parse(bytes.NewReader(raw), "/nix/store")
			return err == nil && len(d.Outputs) == 1 && d.Outputs[0] == out
		})
		return raw
	}

	gen1 := build("1.0")
	a.waitPublished(t, closureOf(t, a.nix, gen1), 2*time.Minute)
	doc1 := waitLatest(aCache, gen1)
	gen2 := build("2.0")
	a.waitPublished(t, closureOf(t, a.nix, gen2), 2*time.Minute)
	doc2 := waitLatest(aCache, gen2)
	if got := waitLatest(cachedir.Cache{Dir: bDir}, gen2); !bytes.Equal(got, doc2) {
		t.Errorf("the mirror's document differs from the publisher's:\n%s\n--- publisher ---\n%s", got, doc2)
	}

	s := startSubstituterProc(t, a.bin, bURL, "--kubo-api", b.API)
	state := filepath.Join(t.TempDir(), "latest-state")
	run := func(upstream, key string) (string, error) {
		return runBin(filepath.Join(a.bin, "nix-ipfs"), []string{"latest", job, "--upstream", upstream,
			"--trusted-public-keys", key, "--state-dir", state})
	}
	for _, up := range []string{s.URL, bURL, "file://" + a.cache} {
		out, err := run(up, a.nix.PublicKey)
		if err != nil || strings.TrimSpace(out) != gen2 {
			t.Fatalf("nix-ipfs latest via %s = %q, %v; want %s", up, out, err, gen2)
		}
	}
	// The fleet's update step: stock Nix copies what latest named,
	// through the substituter.
	checkStockNixCopy(t, a, gen2, s.URL)

	t.Run("UnknownKey", func(t *testing.T) {
		out, err := run(s.URL, "someone-else-1:"+strings.SplitN(a.nix.PublicKey, ":", 2)[1])
		if err == nil || !strings.Contains(out, "no signature by a trusted key") {
			t.Errorf("latest with an unknown key = %q, %v; want a refusal naming the untrusted key", out, err)
		}
	})
	t.Run("RollbackRefused", func(t *testing.T) {
		// An upstream replays gen 1's document, validly signed, after the
		// fleet host accepted gen 2's.
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, latest.Dir), 0o755)
		os.WriteFile(filepath.Join(dir, latest.FileName(job)), doc1, 0o644)
		old := httptest.NewServer(http.FileServer(http.Dir(dir)))
		defer old.Close()
		out, err := run(old.URL, a.nix.PublicKey)
		if err == nil || !strings.Contains(out, "older than the build accepted before") {
			t.Errorf("latest from an upstream replaying an old document = %q, %v; want a rollback refusal", out, err)
		}
	})
	t.Run("Garbage", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("<html>not a document</html>"))
		}))
		defer srv.Close()
		out, err := run(srv.URL, a.nix.PublicKey)
		if err == nil || !strings.Contains(out, "not a latest-build document") {
			t.Errorf("latest from an upstream serving garbage = %q, %v", out, err)
		}
	})
}
