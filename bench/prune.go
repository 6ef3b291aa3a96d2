package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// benchPrune: nix-ipfs prune over a cache of synthetic paths in the real
// narinfo format, every path a root (a built event each, as on a build
// farm where every derivation is built), generations sharing a chain of
// dependencies. Time and peak RSS of the binary, for a dry run and a
// prune that retires nearly everything.
func benchPrune(b *Bench, s *scope, sec *Section) {
	sec.Title = "12. Retention: prune"
	gens, shared, leaves := 100, 500, 995
	if b.quick {
		gens, shared, leaves = 10, 100, 195
	}
	ctx := b.ctx
	n := testenv.StartNATS(s)
	_, js := n.Connect(s)
	_, err := events.EnsureStream(ctx, js, events.StreamOptions{})
	s.check(err, "stream")
	dir := filepath.Join(s.TempDir(), "cache")
	s.check(synthcache.Init(dir), "cache")

	progress("prune: writing %d generations of %d paths and their built events", gens, leaves+1)
	old := time.Now().Add(-30 * 24 * time.Hour)
	seen := map[string]bool{}
	var tops []string
	var acks []jetstream.PubAckFuture
	for g := 0; g < gens; g++ {
		for _, p := range synthcache.Generation("bench", g, shared, leaves, 256) {
			if seen[p.StorePath] {
				continue
			}
			seen[p.StorePath] = true
			_, err := synthcache.Write(dir, p, old)
			s.check(err, "write synthetic path")
			ev := &events.Built{Header: events.Header{Time: old.Add(time.Duration(g) * time.Hour)}, Host: "a",
				StoreDir: "/nix/store", OutPaths: []string{p.StorePath}}
			events.Seal(ev)
			data, err := events.Encode(ev)
			s.check(err, "encode")
			f, err := js.PublishAsync(events.SubjectBuilt, data)
			s.check(err, "publish built")
			acks = append(acks, f)
			if strings.Contains(p.StorePath, "-bench-") {
				tops = append(tops, p.StorePath)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			s.Fatalf("built events not acknowledged")
		}
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			s.Fatalf("publish built: %v", err)
		}
	}
	total := len(seen)
	env := []string{"NIX_IPFS_NATS_URL=" + n.URL, "NIX_IPFS_LOG_LEVEL=warn"}
	if len(tops) > 10 {
		for i, t := range []string{tops[len(tops)/3], tops[len(tops)/2]} {
			s.run(ctx, env, b.bins+"/nix-ipfs", "pin", "add", fmt.Sprintf("release-%d", i), t, "--cache-dir", dir)
		}
	}
	args := []string{"prune", "--cache-dir", dir, "--keep-for", "0s", "--keep-last-per-job", "3", "--grace", "1h", "--kubo-api", "none"}
	run := func(extra ...string) (time.Duration, int64, string) {
		// timedRSS: the command's own peak RSS, not the bench's.
		return timedRSS(ctx, s, env, b.bins+"/nix-ipfs", append(args, extra...)...)
	}
	progress("prune: dry run over %d narinfos", total)
	dryTook, dryRSS, dryOut := run("--dry-run", "--json")
	progress("prune: prune over %d narinfos", total)
	took, rss, out := run()
	retired := pruneResultLine(out)
	left, _ := os.ReadDir(filepath.Join(dir, "nar"))

	aimT, aimM := 60*time.Second, int64(500<<20)
	sec.add(Row{What: fmt.Sprintf("Prune, %d narinfos, dry run (plan only): time", total), Ratio: nan, Ours: fmtDur(dryTook),
		Aim: "< 60 s", Verdict: verdict(dryTook < aimT)})
	sec.add(Row{What: fmt.Sprintf("Prune, %d narinfos, %d NARs left: time", total, len(left)), Ratio: nan, Ours: fmtDur(took),
		Aim: "< 60 s", Verdict: verdict(took < aimT)})
	sec.add(Row{What: "Prune: peak RSS (dry run / prune)", Ratio: nan, Ours: fmtBytes(dryRSS) + " / " + fmtBytes(rss),
		Aim: "< 500 MB", Verdict: verdict(max(dryRSS, rss) < aimM)})
	sec.detailf("A cache of %d synthetic store paths in the real format (`nix-cache-info`, one narinfo each as the publisher writes it, with References, "+
		"and a 256-byte NAR each): %d generations of %d leaves and a top that references the generation's leaves and %d shared paths "+
		"(a chain, so closures are deep); every path has its own \"built\" event (%d events in the stream), as on a build farm where every derivation is built; two pins. "+
		"`nix-ipfs prune --keep-for 0s --keep-last-per-job 3 --grace 1h --kubo-api none` (the binary, against an in-process NATS): it reads every built event and "+
		"every narinfo, computes the kept set, and retires the rest (narinfo moved out, NAR removed, one \"retired\" event each). "+
		"Time is wall clock of the whole command; peak RSS is the process's maxrss. Unpinning on A's kubo is left out (`--kubo-api none`): it costs one RPC per retired CID.\n\n",
		total, gens, leaves, shared, total)
	sec.detailf("Result: %s\n\nDry-run JSON output: %s.\n", strings.TrimSpace(retired), fmtBytes(int64(len(dryOut))))
}

func pruneResultLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "retired") {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}
