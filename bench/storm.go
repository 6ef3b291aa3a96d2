package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// stormResult is one target's hook storm.
type stormResult struct {
	runs     []time.Duration // every hook run, fork to exit
	wall     time.Duration   // first fork to last exit
	stored   uint64          // built events on the stream when the storm ended
	spooled  int             // events the runs spooled instead
	flushed  uint64          // built events on the stream after flushing the spool
	distinct int             // distinct event ids among them
	failed   int             // runs that exited non-zero
	said     int             // runs that exited 0 with a message (spooled, or worse)
}

// benchStorm: a build farm's worth of hooks at once. 50 hook processes run
// side by side, 5,000 events in all, against a three-node JetStream
// cluster (stream R3) and against one server; every event must be stored
// once, either by its run or, if the run spooled it, by the flush after.
func benchStorm(b *Bench, s *scope, sec *Section) {
	sec.Title = "6. Hook storm on a JetStream cluster"
	procs, total := 50, b.sz.stormEvents
	targets := []struct {
		key, name string
		nodes     int
	}{
		{"r3", "3-node cluster, stream R3", 3},
		{"r1", "one server, stream R1", 1},
	}
	res := map[string]stormResult{}
	for _, tg := range targets {
		progress("storm: %d hook processes, %d events, against %s", procs, total, tg.name)
		var got stormResult
		err := runScope("storm/"+tg.key, func(s *scope) { got = b.runStorm(s, tg.nodes, procs, total) })
		s.check(err, "storm "+tg.name)
		res[tg.key] = got
	}
	for _, tg := range targets {
		r := res[tg.key]
		ok := r.flushed == uint64(total) && r.distinct == total && r.failed == 0
		sec.add(Row{What: fmt.Sprintf("Hook storm, %s: %d processes at once, %d events", tg.name, procs, total), Ratio: nan,
			Ours: fmt.Sprintf("p50 %s, p99 %s; %.0f events/s stored", fmtDur(percentile(r.runs, 50)), fmtDur(percentile(r.runs, 99)),
				float64(r.stored)/r.wall.Seconds()),
			Aim: "every event stored once", Verdict: verdict(ok)})
	}
	sec.detailf("%d copies of the real `nix-ipfs-hook` binary run at once, each exec'ing the hook again as soon as it exits, until %d runs in all; each run reports a distinct valid-looking store path (`OUT_PATHS`, `--timeout %s`). "+
		"The servers are real `nats-server` processes on loopback (file store); the cluster's stream is R3, the single server's R1. "+
		"A run's time is fork to exit, as the build that runs it waits. Events/s stored counts the built events on the stream at the end of the storm over its wall time; a run that missed its timeout spooled its event, and `nix-ipfs-hook flush` afterwards stored it (the dedup window makes a spooled event that had in fact arrived count once).\n\n",
		procs, total, hookTimeout)
	sec.detailf("| Target | runs | p50 | p99 | max | wall | stored during the storm | events/s stored | spooled | after flush | distinct ids | non-zero exits |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, tg := range targets {
		r := res[tg.key]
		sec.detailf("| %s | %d | %s | %s | %s | %s | %d | %.0f | %d | %d | %d | %d |\n", tg.name, len(r.runs),
			fmtDur(percentile(r.runs, 50)), fmtDur(percentile(r.runs, 99)), fmtDur(maxDur(r.runs)), fmtDur(r.wall),
			r.stored, float64(r.stored)/r.wall.Seconds(), r.spooled, r.flushed, r.distinct, r.failed)
	}
}

func (b *Bench) runStorm(s *scope, nodes, procs, total int) stormResult {
	ctx := b.ctx
	c := testenv.StartNATSCluster(s, nodes)
	_, js := c.Connect(s)
	_, err := events.EnsureStream(ctx, js, events.StreamOptions{Replicas: nodes})
	s.check(err, "create the stream")

	dir := s.TempDir()
	conf := filepath.Join(dir, "hook.conf")
	s.check(os.WriteFile(conf, []byte("# settings come from the environment\n"), 0o644), "write hook.conf")
	spool := filepath.Join(dir, "spool")
	env := append(os.Environ(),
		"NIX_IPFS_CONFIG="+conf,
		"NIX_IPFS_NATS_URL="+c.URLs(),
		"NIX_IPFS_SPOOL_DIR="+spool,
		"NIX_IPFS_TIMEOUT="+hookTimeout.String(),
		"DRV_PATH=",
	)
	hookBin := filepath.Join(b.bins, "nix-ipfs-hook")

	var (
		mu     sync.Mutex
		res    stormResult
		next   int
		wg     sync.WaitGroup
		tag    = fmt.Sprintf("storm%d-%s", nodes, b.nonce)
		failed []string
		said   []string
	)
	start := time.Now()
	for w := 0; w < procs; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= total || ctx.Err() != nil {
					return
				}
				cmd := exec.Command(hookBin)
				// A fresh slice per run: appending to the shared one from 50
				// goroutines would hand two runs the same OUT_PATHS.
				cmd.Env = append(append([]string(nil), env...), "OUT_PATHS="+fakeStorePath(tag, i))
				t0 := time.Now()
				out, err := cmd.CombinedOutput()
				d := time.Since(t0)
				mu.Lock()
				res.runs = append(res.runs, d)
				if err != nil {
					res.failed++
					if len(failed) < 3 {
						failed = append(failed, fmt.Sprintf("%v: %s", err, out))
					}
				} else if len(out) > 0 {
					res.said++
					if len(said) < 5 {
						said = append(said, strings.TrimSpace(string(out)))
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	if len(failed) > 0 {
		logf("storm: failed runs: %s", strings.Join(failed, "; "))
	}
	if len(said) > 0 {
		progress("storm: %d runs said something, e.g.: %s", res.said, strings.Join(said, " | "))
	}
	res.stored = streamCount(ctx, s, js, events.SubjectBuilt)
	files, _ := hook.Spool{Dir: spool}.List()
	res.spooled = len(files)
	if res.spooled > 0 {
		cmd := exec.Command(hookBin, "flush")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		s.check(err, "flush: "+string(out))
	}
	res.flushed = streamCount(ctx, s, js, events.SubjectBuilt)
	ids := map[string]bool{}
	for _, e := range readEvents(ctx, s, js, events.SubjectBuilt) {
		ids[events.Head(e).ID] = true
	}
	res.distinct = len(ids)
	logf("storm R%d: %d runs in %s, %d stored, %d spooled, %d after flush, %d distinct", nodes, len(res.runs), fmtDur(res.wall), res.stored, res.spooled, res.flushed, res.distinct)
	return res
}
