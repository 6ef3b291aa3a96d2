package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/chunkstudy"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/internal/upgradeload"
	"github.com/nix-ipfs/nix-ipfs/publisher"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// upgradeChunkers are compared offline: today's default, the two before
// it, two smaller rabins.
var upgradeChunkers = []string{publisher.DefaultChunker, publisher.KuboChunker, "size-262144", "rabin-16384-65536-131072", "rabin-4096-16384-65536"}

// upgradeNetChunkers are also fetched over the network, side by side.
var upgradeNetChunkers = []string{publisher.DefaultChunker, publisher.KuboChunker}

// benchUpgrade: issue 22's upgrade (internal/upgradeload: generation 2
// patches two base libraries, every dependent rebuilt with new
// references, built by real Nix). Per chunker, offline (chunkstudy, the
// DAG kubo would make): the share of generation 2's new NAR bytes a
// client that holds generation 1 lacks, blocks per GiB, and a mirror's
// repository growth. Then, per network chunker, the real thing: the
// publisher adds both generations to kubo A, a client (kubo C peered with
// A, `nix-ipfs substituter` reading through C) copies generation 1 with
// stock Nix (a fresh fetch, timed), then generation 2 (bytes over
// bitswap).
func benchUpgrade(b *Bench, s *scope, sec *Section) {
	sec.Title = "13. Upgrades: what a client moves for the next generation"
	if err := upgradeload.CheckTools(); err != nil {
		sec.NotRun = err.Error()
		return
	}
	if !b.hasCommand("substituter") {
		sec.NotRun = "`nix-ipfs substituter` is not in this tree yet"
		return
	}
	ctx := b.ctx
	size := int64(200 << 20)
	if b.quick {
		size = 24 << 20
	}
	plan, err := upgradeload.NewPlan(upgradeload.Config{Bytes: size, Nonce: b.nonce})
	s.check(err, "upgrade workload")
	var tops [2]string
	var gens [2][]chunkstudy.Path
	var closures [2][]string
	for g := 1; g <= 2; g++ {
		expr, err := plan.Expr(g)
		s.check(err, "upgrade expression")
		tops[g-1] = b.buildOnce(s, fmt.Sprintf("upgrade-gen%d", g), fmt.Sprintf("the upgrade workload, generation %d", g), expr)[0]
		gens[g-1], err = chunkstudy.Closure(tops[g-1], func(args ...string) (string, error) { return b.nix.Try("nix-store", args...) })
		s.check(err, "closure")
		for _, p := range gens[g-1] {
			closures[g-1] = append(closures[g-1], p.StorePath)
		}
	}
	progress("upgrade: offline, %d chunkers", len(upgradeChunkers))
	rs, err := chunkstudy.Compare(ctx, gens[0], gens[1], upgradeChunkers)
	s.check(err, "offline comparison")
	for _, r := range rs {
		sec.add(Row{What: fmt.Sprintf("Upgrade, %s, offline: moved ÷ generation 2's new NAR bytes", r.Chunker),
			Ratio: nan, RatioText: fmt.Sprintf("%.1f%%", 100*r.MovedRatio()), Ours: fmtBytes(r.Moved), Base: fmtBytes(r.NewNAR),
			Aim: "≤ 5%", Verdict: verdict(r.MovedRatio() <= 0.05)})
	}

	// The network: each chunker in each round, alternating.
	type netResult struct {
		fresh []float64 // generation 1's copy, MB/s of NAR
		cpu   []string  // CPU-s of kubo A / kubo C / substituter / Nix during it
		moved []int64   // bitswap bytes kubo C received for generation 2
		took  []time.Duration
	}
	net := map[string]*netResult{}
	for _, ch := range upgradeNetChunkers {
		net[ch] = &netResult{}
	}
	var newNAR int64
	for _, p := range gens[1] {
		newNAR += b.narSize(s, []string{p.StorePath})
	}
	gen1NAR := b.narSize(s, closures[0])
	for r := 0; r < b.rounds; r++ {
		for _, ch := range rotate(upgradeNetChunkers, r) {
			progress("upgrade: round %d/%d: %s over the network", r+1, b.rounds, ch)
			err := runScope("upgrade/"+ch, func(s *scope) {
				a := b.newHostA(s)
				b.startPublisher(s, a, "--chunker="+ch)
				kc := testenv.StartKubo(s, clientRole()...)
				self, err := a.kubo.Client.Self(ctx)
				s.check(err, "kubo A identity")
				s.check(kc.Client.Connect(ctx, self), "connect C to A")
				bin := filepath.Join(b.bins, "nix-ipfs")
				plainAddr := freeAddr(s)
				plain := testenv.StartProc(s, bin, []string{"serve", "--cache-dir", a.cache, "--listen", plainAddr},
					"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn")
				waitCacheInfo(ctx, s, "http://"+plainAddr, plain)
				listen := freeAddr(s)
				sub := testenv.StartProc(s, bin, []string{"substituter", "--upstream", "http://" + plainAddr, "--listen", listen,
					"--kubo-api", kc.API, "--trusted-public-keys", b.nix.PublicKey},
					"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn", "IPFS_PATH="+kc.Repo)
				url := "http://" + listen
				waitCacheInfo(ctx, s, url, sub)
				dest := filepath.Join(destDir(s), "store")
				fetch := func(top string) time.Duration {
					start := time.Now()
					_, err := b.nix.Try("nix", "copy", "--from", url, "--to", dest,
						"--option", "trusted-public-keys", b.nix.PublicKey, "--option", "require-sigs", "true",
						"--option", "narinfo-cache-positive-ttl", "0", "--option", "narinfo-cache-negative-ttl", "0", top)
					s.check(err, "nix copy from the substituter")
					return time.Since(start)
				}
				res := net[ch]
				b.publishBuilt(s, a.js, []string{tops[0]})
				b.waitNarinfos(s, a.cache, closures[0], pubTimeout, 20*time.Millisecond, a.pub)
				clk := startCPU([]int{a.kubo.PID()}, []int{kc.PID()}, []int{sub.Cmd.Process.Pid})
				took := fetch(tops[0])
				res.cpu = append(res.cpu, fmtCPU(clk.since(), 2))
				res.fresh = append(res.fresh, float64(gen1NAR)/MB/took.Seconds())
				b.publishBuilt(s, a.js, []string{tops[1]})
				b.waitNarinfos(s, a.cache, closures[1], pubTimeout, 20*time.Millisecond, a.pub)
				before := statsOf(s, kc)
				res.took = append(res.took, fetch(tops[1]))
				after := statsOf(s, kc)
				res.moved = append(res.moved, int64(after.DataReceived-before.DataReceived))
				for _, p := range closures[1] {
					if _, err := b.nix.Try("nix-store", "--store", dest, "--check-validity", p); err != nil {
						s.Fatalf("%s not valid in the client's store: %v", storepath.HashPart(p), err)
					}
				}
			})
			s.check(err, "upgrade over the network with "+ch)
		}
	}
	base := net[publisher.KuboChunker]
	for _, ch := range upgradeNetChunkers {
		res := net[ch]
		var moved []float64
		for _, m := range res.moved {
			moved = append(moved, float64(m))
		}
		mv := median(moved)
		sec.add(Row{What: fmt.Sprintf("Upgrade, %s, real fetch of generation 2 after generation 1 (substituter, kubo C's bitswap bytes) ÷ its new NAR bytes", ch),
			Ratio: nan, RatioText: fmt.Sprintf("%.1f%%", 100*mv/float64(newNAR)), Ours: fmtBytes(int64(mv)), Base: fmtBytes(newNAR),
			Aim: "≤ 5%", Verdict: verdict(mv/float64(newNAR) <= 0.05)})
		if ch != publisher.KuboChunker {
			sec.add(Row{What: fmt.Sprintf("Upgrade, fresh fetch of generation 1 through the substituter, %s vs %s (MB/s)", ch, publisher.KuboChunker),
				Ratio: median(res.fresh) / median(base.fresh), Ours: fmt.Sprintf("%.0f MB/s", median(res.fresh)), Base: fmt.Sprintf("%.0f MB/s", median(base.fresh)),
				Aim: "≥ 0.9x", Verdict: verdict(median(res.fresh) >= 0.9*median(base.fresh))})
		}
	}

	var tbl strings.Builder
	chunkstudy.Table(&tbl, rs)
	sec.detailf("The workload of `internal/upgradeload` at %s: %d store paths per generation, %s of NAR in generation 1, %s new in generation 2 (every path rebuilt: plain HTTP moves 100%%). "+
		"Offline (`internal/chunkstudy`, the DAG `ipfs add --cid-version=1` makes, repository growth = a mirror's distinct block bytes after both generations ÷ after generation 1; chunk+hash speed on one goroutine, rough on a shared machine):\n\n%s\n"+
		"Over the network, per round and chunker: a fresh host A (NATS, kubo, the publisher with `--chunker`), a fresh client kubo C (the client role's settings: internal/kubod, deploy/kubo/client.sh) connected to A, and `nix-ipfs substituter` reading through C (alone on its LAN: a NAR's missing leaves go to C as one list); stock `nix copy` of generation 1, then of generation 2 into the same store. "+
		"Moved: kubo C's `stats bitswap` DataReceived during generation 2's copy (medians of %d rounds): ",
		fmtBytes(size), len(closures[0]), fmtBytes(gen1NAR), fmtBytes(newNAR), tbl.String(), b.rounds)
	for _, ch := range upgradeNetChunkers {
		res := net[ch]
		sec.detailf("%s %v bytes, generation 2's copy took %v, generation 1's ran at %s MB/s (CPU-s of kubo A / kubo C / substituter / Nix during it: %s); ", ch, res.moved, res.took, fmtFloats(res.fresh), strings.Join(res.cpu, ", "))
	}
	sec.detailf("\n")
}

func fmtFloats(xs []float64) string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(out, "/")
}
