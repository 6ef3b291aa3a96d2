package main

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// benchFetch: stock Nix copying the closure into a fresh store from the
// substituter (NARs from kubo B), against the same cache over plain HTTP.
func benchFetch(b *Bench, s *scope, sec *Section) {
	sec.Title = "4. Client fetch"
	if !b.hasCommand("substituter") {
		sec.NotRun = "`nix-ipfs substituter` is not in this tree yet"
		return
	}
	ctx := b.ctx
	top, closure := b.closure(s)
	total := b.narSize(s, closure)

	// Host A publishes the closure; host B pins every CID, as a mirror
	// would; then A's kubo stops, so NARs can only come from B.
	progress("fetch: publishing the closure and pinning it on B")
	a := b.newHostA(s)
	b.startPublisher(s, a)
	b.publishBuilt(s, a.js, []string{top})
	cids := b.waitNarinfos(s, a.cache, closure, pubTimeout, 20*time.Millisecond, a.pub)
	kb := testenv.StartKubo(s)
	self, err := a.kubo.Client.Self(ctx)
	s.check(err, "kubo A identity")
	s.check(kb.Client.Connect(ctx, self), "connect B to A")
	for _, p := range closure {
		c, err := cid.Decode(cids[p])
		s.check(err, "CID")
		s.check(kb.Client.Pin(ctx, c, filepath.Base(p)), "pin on B")
	}
	a.kubo.Stop(s)

	plain := httptest.NewServer(http.FileServer(http.Dir(a.cache)))
	s.Cleanup(plain.Close)
	listen, metrics := freeAddr(s), freeAddr(s)
	sub := testenv.StartProc(s, filepath.Join(b.bins, "nix-ipfs"), []string{"substituter",
		"--upstream", plain.URL, "--listen", listen, "--kubo-api", kb.API, "--metrics-addr", metrics},
		"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn")
	subURL := "http://" + listen
	s.waitFor(ctx, 30*time.Second, 20*time.Millisecond, "the substituter", func() bool {
		if sub.Wait(0) {
			s.Fatalf("the substituter exited:\n%s", sub.Tail(30))
		}
		resp, err := http.Get(subURL + "/nix-cache-info")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	sides := []struct{ key, name, url string }{
		{"sub", "nix-ipfs substituter (NARs from kubo B)", subURL},
		{"plain", "plain HTTP (Go http.FileServer of the cache directory)", plain.URL},
	}
	res := map[string][]float64{}
	for r := 0; r < b.rounds; r++ {
		for _, sd := range rotate(sides, r) {
			progress("fetch: round %d/%d: %s", r+1, b.rounds, sd.name)
			dest := filepath.Join(s.TempDir(), "store")
			start := time.Now()
			_, err := b.nix.Try("nix", "copy", "--from", sd.url, "--to", dest,
				"--option", "trusted-public-keys", b.nix.PublicKey, "--option", "require-sigs", "true",
				"--option", "narinfo-cache-positive-ttl", "0", "--option", "narinfo-cache-negative-ttl", "0", top)
			took := time.Since(start)
			s.check(err, "nix copy from "+sd.name)
			ents, _ := os.ReadDir(filepath.Join(dest, "nix", "store"))
			got := 0
			for _, e := range ents {
				if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
					got++
				}
			}
			if got < len(closure) {
				s.Fatalf("%s: %d of %d paths in the new store", sd.name, got, len(closure))
			}
			removeAll(filepath.Dir(dest))
			res[sd.key] = append(res[sd.key], float64(total)/MB/took.Seconds())
		}
	}
	fromIPFS, fromUpstream := metricValue(metrics, `nixipfs_substituter_nar_bytes_total{source="ipfs"}`), metricValue(metrics, `nixipfs_substituter_nar_bytes_total{source="upstream"}`)

	sr, pr := median(res["sub"]), median(res["plain"])
	sec.add(Row{What: "Client fetch of the closure: substituter vs plain HTTP", Ratio: sr / pr,
		Ours: fmtMBps(sr), Base: fmtMBps(pr), Aim: ">= 0.7x", Verdict: verdict(sr/pr >= 0.7)})
	sec.detailf("Stock Nix (`nix copy --from URL --to FRESH_DIR`, `require-sigs = true`, trusting only the publisher's key, narinfo disk cache TTLs 0) copies the publish closure (%d paths, %s of NAR) into a fresh chroot store, from `nix-ipfs substituter --upstream <plain HTTP> --kubo-api <B>` or straight from the plain HTTP server. "+
		"B holds every NAR pinned (as a mirror leaves it), and A's kubo is stopped, so the substituter's NARs come from B. Sides alternate, %d rounds. Throughput is NAR bytes over the whole `nix copy`, narinfo fetches and store registration included.\n\n",
		len(closure), fmtBytes(total), b.rounds)
	sec.detailf("| Side | median | MB/s per round |\n|---|---|---|\n")
	for _, sd := range sides {
		sec.detailf("| %s | %s | %s |\n", sd.name, fmtMBps(median(res[sd.key])), fmtRates(res[sd.key]))
	}
	sec.detailf("\nThe substituter's own count: %s of NAR sent from IPFS, %s from upstream (`nixipfs_substituter_nar_bytes_total`).\n",
		fmtBytes(int64(fromIPFS)), fmtBytes(int64(fromUpstream)))
}

// freeAddr returns a loopback address with a port free at the moment.
func freeAddr(s *scope) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	s.check(err, "listen")
	defer l.Close()
	return l.Addr().String()
}

// metricValue reads one sample from a Prometheus text endpoint; 0 if absent.
func metricValue(addr, series string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return 0
}
