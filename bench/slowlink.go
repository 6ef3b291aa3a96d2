package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// benchSlowLink: stock Nix on host C copying a closure over an emulated
// link (latency and a rate limit), through the substituter (NARs from kubo
// C over bitswap from B, or from B's gateway as CARs or as raw blocks)
// against plain HTTP from A's cache over the same link.
func benchSlowLink(b *Bench, s *scope, sec *Section) {
	sec.Title = "9. Client fetch over a slow link"
	if !b.hasCommand("substituter") {
		sec.NotRun = "`nix-ipfs substituter` is not in this tree yet"
		return
	}
	ctx := b.ctx
	top, closure := b.closureSized(s, "slow-closure", b.sz.slowParts, b.sz.slowPartBytes)
	total := b.narSize(s, closure)

	progress("slowlink: publishing the closure and pinning it on B")
	a, kb, _ := b.mirrorOnB(s, []string{top}, closure)

	bin := filepath.Join(b.bins, "nix-ipfs")
	plainAddr := freeAddr(s)
	plainProc := testenv.StartProc(s, bin, []string{"serve", "--cache-dir", a.cache, "--listen", plainAddr},
		"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn")
	waitCacheInfo(ctx, s, "http://"+plainAddr, plainProc)
	gwFile, err := os.ReadFile(filepath.Join(kb.Repo, "gateway"))
	s.check(err, "kubo B's gateway address")
	gwAddr := strings.TrimPrefix(strings.TrimSpace(string(gwFile)), "http://")
	bID := strings.TrimSpace(kb.IPFS(s, "id", "-f", "<id>"))
	var bSwarm string
	for _, a := range strings.Fields(kb.IPFS(s, "swarm", "addrs", "listen")) {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			bSwarm = strings.TrimPrefix(a, "/ip4/127.0.0.1/tcp/")
		}
	}
	if bSwarm == "" {
		s.Fatalf("kubo B has no loopback TCP swarm address")
	}

	copyFrom := func(url string) float64 {
		dest := filepath.Join(destDir(s), "store")
		start := time.Now()
		_, err := b.nix.Try("nix", "copy", "--from", url, "--to", dest,
			"--option", "trusted-public-keys", b.nix.PublicKey, "--option", "require-sigs", "true",
			"--option", "narinfo-cache-positive-ttl", "0", "--option", "narinfo-cache-negative-ttl", "0", top)
		took := time.Since(start)
		s.check(err, "nix copy from "+url)
		ents, _ := os.ReadDir(filepath.Join(dest, "nix", "store"))
		if len(ents) < len(closure) {
			s.Fatalf("%s: %d of %d paths in the new store", url, len(ents), len(closure))
		}
		removeAll(filepath.Dir(dest))
		return float64(total) / MB / took.Seconds()
	}
	sub := func(args ...string) (string, *testenv.Proc) {
		listen := freeAddr(s)
		p := testenv.StartProc(s, bin, append([]string{"substituter", "--listen", listen}, args...),
			"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=info")
		url := "http://" + listen
		waitCacheInfo(ctx, s, url, p)
		return url, p
	}

	rtts := []time.Duration{20 * time.Millisecond, 80 * time.Millisecond}
	sides := []struct{ key, name string }{
		{"plain", "plain HTTP (`nix-ipfs serve` on A, over the link)"},
		{"kubo", "substituter, NARs from kubo C, which fetches from B over the link (bitswap)"},
		{"car", "substituter, NARs from B's gateway over the link, one CAR per NAR"},
		{"blocks", "substituter, NARs from B's gateway over the link, block by block (`--gateway-blocks`)"},
	}
	type key struct {
		rtt  time.Duration
		side string
	}
	rates := map[key][]float64{}
	fromIPFS := map[key]int64{}
	for _, rtt := range rtts {
		// One link per path between the hosts, each with the same latency
		// and rate: C to A's cache, C to B's swarm port, C to B's gateway.
		toA := newLink(s, plainAddr, rtt, b.sz.slowRate)
		toB := newLink(s, "127.0.0.1:"+bSwarm, rtt, b.sz.slowRate)
		toGW := newLink(s, gwAddr, rtt, b.sz.slowRate)
		upstream := "http://" + toA.Addr()
		// Kubo C reaches B only through the link.
		kc := testenv.StartKubo(s, testenv.KuboConfig("Routing.Type", `"none"`))
		_, port, _ := strings.Cut(toB.Addr(), ":")
		kc.IPFS(s, "swarm", "connect", fmt.Sprintf("/ip4/127.0.0.1/tcp/%s/p2p/%s", port, bID))
		for r := 0; r < b.rounds; r++ {
			for _, sd := range rotate(sides, r) {
				progress("slowlink: RTT %v, round %d/%d: %s", rtt, r+1, b.rounds, sd.key)
				k := key{rtt, sd.key}
				if sd.key == "plain" {
					rates[k] = append(rates[k], copyFrom(upstream))
					continue
				}
				var url string
				var p *testenv.Proc
				switch sd.key {
				case "kubo":
					// Nothing of the closure left on C from an earlier round.
					kc.IPFS(s, "repo", "gc")
					url, p = sub("--upstream", upstream, "--kubo-api", kc.API)
				case "car":
					url, p = sub("--upstream", upstream, "--gateway", "http://"+toGW.Addr())
				case "blocks":
					url, p = sub("--upstream", upstream, "--gateway", "http://"+toGW.Addr(), "--gateway-blocks")
				}
				rates[k] = append(rates[k], copyFrom(url))
				for _, l := range narLines(p.Log) {
					if l.Source == SourceIPFS {
						fromIPFS[k] += l.Bytes
					}
				}
				p.Signal(syscall.SIGTERM)
				p.Wait(10 * time.Second)
			}
		}
		kc.Stop(s)
		toA.close()
		toB.close()
		toGW.close()
	}

	for _, rtt := range rtts {
		pr := median(rates[key{rtt, "plain"}])
		for _, sd := range sides[1:] {
			r := median(rates[key{rtt, sd.key}])
			sec.add(Row{What: fmt.Sprintf("Slow link, %v RTT, %s: substituter (%s) vs plain HTTP", rtt, fmtRate(b.sz.slowRate), sd.key), Ratio: r / pr,
				Ours: fmtMBps(r), Base: fmtMBps(pr), Aim: ">= 0.8x", Verdict: verdict(r/pr >= 0.8)})
		}
	}
	sec.detailf("Stock Nix on host C copies a closure (%d paths, %s of NAR) into a fresh store on tmpfs. Every path between C and the other hosts goes through an emulated link (bench/link.go: a TCP proxy on loopback that delays each direction by half the round trip and limits each direction to %s, like netem, which this machine lacks): C to A's `nix-ipfs serve` (narinfos, and NARs for plain HTTP), C's kubo to B's swarm port (C has `Routing.Type none` and is connected to B only through the link; A's kubo is stopped), and C to B's gateway. "+
		"The substituter runs on C with `--upstream` over the link; a fresh process per copy, and C's kubo garbage-collected before each copy, so nothing comes from an earlier round. Sides rotate, %d rounds per round trip time.\n\n",
		len(closure), fmtBytes(total), fmtRate(b.sz.slowRate), b.rounds)
	sec.detailf("| RTT | Side | median | MB/s per round | NAR bytes from IPFS |\n|---|---|---|---|---|\n")
	for _, rtt := range rtts {
		for _, sd := range sides {
			k := key{rtt, sd.key}
			from := "-"
			if sd.key != "plain" {
				from = fmtBytes(fromIPFS[k])
			}
			sec.detailf("| %v | %s | %s | %s | %s |\n", rtt, sd.name, fmtMBps(median(rates[k])), fmtRates(rates[k]), from)
		}
	}
}

// fmtRate prints a link rate in Mbit/s.
func fmtRate(bytesPerSec float64) string {
	return fmt.Sprintf("%.0f Mbit/s", bytesPerSec*8/1e6)
}
