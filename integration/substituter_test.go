package integration

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// substituterProc is a running `nix-ipfs substituter` binary.
type substituterProc struct {
	*testenv.Proc
	URL     string // the cache Nix is pointed at
	metrics string // its /metrics URL
}

// startSubstituterProc runs `nix-ipfs substituter` against upstream with
// extra flags (--kubo-api or --gateway) and waits until it serves.
func startSubstituterProc(t *testing.T, bin, upstream string, extra ...string) *substituterProc {
	t.Helper()
	metricsAddr := freeAddr(t)
	args := append([]string{"substituter", "--upstream", upstream, "--listen", "127.0.0.1:0",
		"--metrics-addr", metricsAddr, "--ipfs-timeout", "10s",
		"--log-format", "console", "--log-level", "debug"}, extra...)
	p := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), args)
	s := &substituterProc{Proc: p, metrics: "http://" + metricsAddr + "/metrics"}
	addrRE := regexp.MustCompile(`substituter listening\s.*"addr": "([^"]+)"`)
	testenv.Eventually(t, 30*time.Second, "the substituter listening", func() bool {
		b, _ := os.ReadFile(p.Log)
		if m := addrRE.FindSubmatch(b); m != nil {
			s.URL = "http://" + string(m[1])
		}
		return s.URL != "" && httpOK(s.URL+"/nix-cache-info") && httpOK("http://"+metricsAddr+"/healthz")
	})
	return s
}

// nars returns nixipfs_substituter_nars_total summed over the series whose
// labels include every given `name="value"` pair.
func (s *substituterProc) nars(t *testing.T, labels ...string) float64 {
	t.Helper()
	return scrapeCounter(t, s.metrics, "nixipfs_substituter_nars_total", labels...)
}

func scrapeCounter(t *testing.T, url, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		total += v
	}
	return total
}

// waitNars waits until the substituter has counted want NARs with labels:
// it counts a response once its handler returns, which may be just after
// Nix has read the last byte.
func (s *substituterProc) waitNars(t *testing.T, want float64, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.nars(t, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nixipfs_substituter_nars_total%v = %v, want %v", labels, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *substituterProc) logHas(t *testing.T, re string) bool {
	t.Helper()
	b, _ := os.ReadFile(s.Log)
	return regexp.MustCompile(re).Match(b)
}

// copyCacheDir copies a file:// cache to a new directory a test may alter.
func copyCacheDir(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "cache")
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return to
}

// rewriteNarinfo changes the narinfo of p in cache with mod.
func rewriteNarinfo(t *testing.T, cache, p string, mod func(*narinfo.NarInfo)) {
	t.Helper()
	f := filepath.Join(cache, storepath.HashPart(p)+".narinfo")
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := narinfo.ParseBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	mod(ni)
	if err := os.WriteFile(f, []byte(ni.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSubstituterStockNix is the substituter's proof with stock Nix as the
// client. Host A builds a closure and publishes it (the publisher binary,
// its kubo, a signed file:// cache served over HTTP); kubo B pins every
// CID from A. The `nix-ipfs substituter` binary then serves A's cache with
// NARs from B, and `nix copy` into fresh stores, trusting only A's key,
// must produce paths identical to A's:
//   - with everything up, every NAR comes from IPFS;
//   - an IPFSHash pointing at other bytes (same size, and another size)
//     falls back to the upstream NAR, logged and counted as a mismatch;
//   - a tampered signature is refused by Nix as without the substituter;
//   - with A's key, every CID the publisher signed streams on its first
//     fetch; a signed CID of other bytes is never served as the NAR;
//   - with A's NAR files deleted and A's kubo stopped, the copy still
//     succeeds, through kubo B's RPC API and through B's gateway (blocks
//     checked one by one against their CIDs).
//
// Once per Nix version: the client (and A's Nix and publisher) is Debian
// 12's Nix 2.8.0, then Nix 2.26 in its chroot, reaching the substituter
// on the host's loopback.
func TestSubstituterStockNix(t *testing.T) {
	testenv.ForEachNix(t, func(t *testing.T, n *testenv.Nix) {
		a := newHostAWith(t, n)
		a.startPublisher(t)
		top := a.nix.Build(t, richClosure(testenv.Nonce()))[0]
		closure := closureOf(t, a.nix, top)
		infos := a.waitPublished(t, closure, 2*time.Minute)
		total := float64(len(closure))

		b := testenv.StartKubo(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		selfA, err := a.kubo.Client.Self(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Client.Connect(ctx, selfA); err != nil {
			t.Fatal(err)
		}
		for _, p := range closure {
			b.IPFS(t, "pin", "add", "--progress=false", infos[p].IPFSHash)
		}

		upstream := httptest.NewServer(http.FileServer(http.Dir(a.cache)))
		defer upstream.Close()

		t.Run("FromIPFS", func(t *testing.T) {
			s := startSubstituterProc(t, a.bin, upstream.URL, "--kubo-api", b.API)
			checkStockNixCopy(t, a, top, s.URL)
			s.waitNars(t, total, `source="ipfs"`)
			if got := s.nars(t, `source="upstream"`) + s.nars(t, `source="none"`); got != 0 {
				t.Errorf("%v NARs not from IPFS", got)
			}
			if !s.logHas(t, `NAR served.*"source": "ipfs"`) {
				t.Errorf("log does not say the NARs came from IPFS")
			}
			// Through B's HTTP gateway, found over B's RPC API.
			if !s.logHas(t, `reading from kubo through its gateway.*"gateway": "`+regexp.QuoteMeta(b.Gateway)+`"`) {
				t.Errorf("log does not say the NARs were read through kubo B's gateway %s", b.Gateway)
			}
			// The narinfo text is upstream's, byte for byte, IPFSHash included.
			for _, p := range closure {
				want, _ := os.ReadFile(filepath.Join(a.cache, storepath.HashPart(p)+".narinfo"))
				resp, err := http.Get(s.URL + "/" + storepath.HashPart(p) + ".narinfo")
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !bytes.Equal(got, want) {
					t.Errorf("%s: narinfo differs from upstream's:\n%s\n---\n%s", p, got, want)
				}
			}
		})

		t.Run("FromIPFSThroughRPC", func(t *testing.T) {
			s := startSubstituterProc(t, a.bin, upstream.URL, "--kubo-api", b.API, "--kubo-gateway", "off")
			checkStockNixCopy(t, a, top, s.URL)
			s.waitNars(t, total, `source="ipfs"`)
			if !s.logHas(t, `using RPC cat.*"reason": "--kubo-gateway=off"`) || s.logHas(t, `reading from kubo through its gateway`) {
				t.Errorf("log does not say the NARs were read through RPC cat")
			}
		})

		t.Run("IPFSHashMismatchFallsBack", func(t *testing.T) {
			cache := copyCacheDir(t, a.cache)
			other := otherPath(t, closure, top)
			// top: the CID of its NAR with one byte changed (same size, so
			// only the hash can tell). other: the CID of unrelated bytes.
			wrongCID, unrelatedCID := wrongCIDs(t, a.nix, b, top, other)
			rewriteNarinfo(t, cache, top, func(ni *narinfo.NarInfo) { ni.IPFSHash = wrongCID })
			rewriteNarinfo(t, cache, other, func(ni *narinfo.NarInfo) { ni.IPFSHash = unrelatedCID })

			up := httptest.NewServer(http.FileServer(http.Dir(cache)))
			defer up.Close()
			s := startSubstituterProc(t, a.bin, up.URL, "--kubo-api", b.API)
			checkStockNixCopy(t, a, top, s.URL)
			s.waitNars(t, 1, `source="upstream"`, `reason="hash_mismatch"`)
			s.waitNars(t, 1, `source="upstream"`, `reason="size_mismatch"`)
			s.waitNars(t, total-2, `source="ipfs"`)
			if f := scrapeCounter(t, s.metrics, "nixipfs_substituter_ipfs_failures_total", `reason="hash_mismatch"`); f != 1 {
				t.Errorf("ipfs_failures_total{reason=hash_mismatch} = %v", f)
			}
			if !s.logHas(t, `falling back to upstream.*"cid": "`+wrongCID+`".*"reason": "hash_mismatch"`) {
				t.Errorf("log does not report the hash mismatch of %s", wrongCID)
			}
		})

		t.Run("TamperedSignatureRefused", func(t *testing.T) {
			cache := copyCacheDir(t, a.cache)
			// A well-formed signature by the right key name, over another
			// path's fingerprint.
			var borrowed []string
			for _, p := range closure {
				if p != top {
					borrowed = infos[p].Sigs
					break
				}
			}
			rewriteNarinfo(t, cache, top, func(ni *narinfo.NarInfo) { ni.Sigs = borrowed })
			up := httptest.NewServer(http.FileServer(http.Dir(cache)))
			defer up.Close()
			s := startSubstituterProc(t, a.bin, up.URL, "--kubo-api", b.API)
			dest := filepath.Join(t.TempDir(), "store-c")
			_, err := a.nix.Try("nix", "copy", "--from", s.URL, "--to", dest,
				"--option", "trusted-public-keys", a.nix.PublicKey, "--option", "require-sigs", "true", top)
			if err == nil || !strings.Contains(err.Error(), "signature") {
				t.Errorf("nix copy of a path whose signature was tampered with: %v", err)
			} else {
				t.Logf("Nix %s refused it: %s", n.Version, lastLine(err.Error()))
			}
			if _, err := a.nix.Try("nix-store", "--store", dest, "--check-validity", top); err == nil {
				t.Errorf("%s is valid in the client store despite its bad signature", top)
			}
		})

		// With A's key, every CID the publisher signed is trusted on its
		// first fetch, cold: read ahead, and sent as it is read (its
		// response begins before the read ends, unless the read ahead
		// ended first), and the bytes are still the NAR's.
		t.Run("SignedCIDsStreamCold", func(t *testing.T) {
			s := startSubstituterProc(t, a.bin, upstream.URL, "--kubo-api", b.API, "--trusted-public-keys", a.nix.PublicKey)
			checkStockNixCopy(t, a, top, s.URL)
			s.waitNars(t, total, `source="ipfs"`)
			for _, p := range closure {
				if !s.logHas(t, `NAR served.*"store_path": "`+regexp.QuoteMeta(p)+`".*"trust": "signed".*"source": "ipfs"`) {
					t.Errorf("%s: not trusted as a signed CID on its first fetch", p)
				}
			}
			if s.logHas(t, `IPFSSig is not trusted`) {
				t.Errorf("an IPFSSig of the publisher's was not trusted")
			}
		})

		// A publisher bug, simulated: narinfos whose IPFSSig (by A's
		// key) signs the CID of other bytes. Another size is caught
		// before a byte is sent; the same size is found out at the end
		// of its read, and a request already sending it is cut before it
		// completes; the next fetch reads and checks first and falls back
		// to upstream. Wrong bytes are never served whole.
		t.Run("SignedWrongCIDNeverServed", func(t *testing.T) {
			cache := copyCacheDir(t, a.cache)
			other := otherPath(t, closure, top)
			keyText, err := os.ReadFile(a.nix.SecretKey)
			if err != nil {
				t.Fatal(err)
			}
			sk, err := signature.LoadSecretKey(strings.TrimSpace(string(keyText)))
			if err != nil {
				t.Fatal(err)
			}
			wrongCID, unrelatedCID := wrongCIDs(t, a.nix, b, top, other)
			resign := func(c string) func(*narinfo.NarInfo) {
				return func(ni *narinfo.NarInfo) {
					ni.IPFSHash, ni.IPFSSigs = c, nil
					if err := ni.SignCID(sk); err != nil {
						t.Fatal(err)
					}
				}
			}
			rewriteNarinfo(t, cache, top, resign(wrongCID))
			rewriteNarinfo(t, cache, other, resign(unrelatedCID))

			up := httptest.NewServer(http.FileServer(http.Dir(cache)))
			defer up.Close()
			s := startSubstituterProc(t, a.bin, up.URL, "--kubo-api", b.API, "--trusted-public-keys", a.nix.PublicKey)
			// top's wrong CID is found out at the end of its read: if its
			// request had begun sending by then, the transfer is cut (Nix
			// does not resume it) and the first copy may fail; if the
			// read ahead ended first, the request gets upstream's NAR.
			// Either way the next copy must succeed, every path right.
			dest := filepath.Join(t.TempDir(), "store-c")
			args := []string{"nix", "copy", "--from", s.URL, "--to", dest,
				"--option", "trusted-public-keys", a.nix.PublicKey, "--option", "require-sigs", "true", top}
			_, err = a.nix.Try(args[0], args[1:]...)
			cut := s.logHas(t, `trusted CID does not hold its NAR; connection cut.*"cid": "`+wrongCID+`"`) ||
				s.logHas(t, `"cid": "`+wrongCID+`".*trusted CID does not hold its NAR; connection cut`)
			if err != nil {
				t.Logf("first copy failed, as a cut transfer may make it: %s", lastLine(err.Error()))
				if !cut {
					t.Errorf("the first copy failed with no cut stream of %s logged", wrongCID)
				}
				checkStockNixCopy(t, a, top, s.URL)
			} else {
				for _, p := range closure {
					if !bytes.Equal(a.nix.Dump(t, filepath.Join(dest, p)), a.nix.Dump(t, p)) {
						t.Errorf("%s: wrong contents in the client store", p)
					}
				}
			}
			s.waitNars(t, 1, `source="upstream"`, `reason="size_mismatch"`)
			s.waitNars(t, 1, `source="upstream"`, `reason="hash_mismatch"`)
			t.Logf("the wrong CID's request was cut: %v (else it was answered from upstream whole)", cut)
			for _, c := range []string{wrongCID, unrelatedCID} {
				if s.logHas(t, `NAR served.*"cid": "`+c+`".*"source": "ipfs"`) {
					t.Errorf("the wrong bytes of %s were served as a NAR", c)
				}
			}
		})

		// From here on, only IPFS on B has the NARs.
		nars, _ := filepath.Glob(filepath.Join(a.cache, "nar", "*"))
		if len(nars) < len(closure) {
			t.Fatalf("%d NAR files in A's cache for %d paths", len(nars), len(closure))
		}
		for _, f := range nars {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		a.kubo.Stop(t)

		t.Run("NARsGoneKuboAStopped", func(t *testing.T) {
			s := startSubstituterProc(t, a.bin, upstream.URL, "--kubo-api", b.API)
			checkStockNixCopy(t, a, top, s.URL)
			s.waitNars(t, total, `source="ipfs"`)
			if !s.logHas(t, `NAR served.*"source": "ipfs"`) {
				t.Errorf("log does not say the NARs came from IPFS")
			}
		})

		// Beside kubo B, NAR bytes come straight from B's block store:
		// shown with B's daemon stopped, so that nothing else can
		// serve them.
		t.Run("FromBlockStoreDaemonStopped", func(t *testing.T) {
			b.Stop(t)
			defer b.Start(t)
			s := startSubstituterProc(t, a.bin, upstream.URL, "--kubo-api", b.API, "--kubo-blocks", b.Repo,
				"--trusted-public-keys", a.nix.PublicKey)
			checkStockNixCopy(t, a, top, s.URL)
			s.waitNars(t, total, `source="ipfs"`)
			if got := s.nars(t, `source="upstream"`) + s.nars(t, `source="none"`); got != 0 {
				t.Errorf("%v NARs not from IPFS", got)
			}
			if !s.logHas(t, `reading blocks straight from kubo's block store.*"blocks": "`+regexp.QuoteMeta(filepath.Join(b.Repo, "blocks"))+`"`) {
				t.Errorf("log does not name kubo B's block store")
			}
			if s.logHas(t, `block store read stopped`) {
				t.Errorf("a read from the block store fell back to the (stopped) daemon")
			}
		})

		t.Run("Gateway", func(t *testing.T) {
			gw, err := os.ReadFile(filepath.Join(b.Repo, "gateway"))
			if err != nil {
				t.Fatalf("kubo B's gateway address: %v", err)
			}
			s := startSubstituterProc(t, a.bin, upstream.URL, "--gateway", strings.TrimSpace(string(gw)))
			checkStockNixCopy(t, a, top, s.URL)
			s.waitNars(t, total, `source="ipfs"`)
			if got := s.nars(t, `source="upstream"`) + s.nars(t, `source="none"`); got != 0 {
				t.Errorf("%v NARs not from IPFS", got)
			}
		})
	})
}

// otherPath is the closure's dependency named "other", not top.
func otherPath(t *testing.T, closure []string, top string) string {
	t.Helper()
	var other string
	for _, p := range closure {
		if strings.Contains(p, "-other-") {
			other = p
		}
	}
	if other == "" || other == top {
		t.Fatalf("no 'other' path in %v", closure)
	}
	return other
}

// wrongCIDs adds to k two CIDs that do not hold their NARs: wrong, top's
// NAR with one byte changed (same size, so only the hash can tell), and
// unrelated, a few bytes that are not other's NAR.
func wrongCIDs(t *testing.T, nix *testenv.Nix, k *testenv.Kubo, top, other string) (wrong, unrelated string) {
	t.Helper()
	dump := nix.Dump(t, top)
	dump[len(dump)/2] ^= 1
	add := func(name string, b []byte) string {
		f := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(k.IPFS(t, "add", "-Q", "--cid-version=1", f))
	}
	return add("wrong", dump), add("unrelated", []byte("not the NAR of "+other+"\n"))
}
