package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

var scaleSizes = flag.String("scale-sizes", "", "the scale section's sizes, comma-separated (default 100000,300000,1000000; -quick 5000,20000)")

// benchScale: a year of a farm (issue 24). At each size, a nixpkgs-shaped
// cache written synthetically (synthcache.WriteNixpkgs: a few core paths
// referenced by almost everything, chains of libraries, many leaves), a
// "built" event per path in the stream, one named pin; then `status
// --cache-dir`, `prune --dry-run` and `prune` as the binary, each timed
// with its peak RSS. The stream's size is what JetStream reports for it.
func benchScale(b *Bench, s *scope, sec *Section) {
	sec.Title = "14. Scale: a million paths"
	sizes := []int{100_000, 300_000, 1_000_000}
	if b.quick {
		sizes = []int{5_000, 20_000}
	}
	if *scaleSizes != "" {
		sizes = nil
		for _, f := range strings.Split(*scaleSizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			s.check(err, "-scale-sizes")
			sizes = append(sizes, n)
		}
	}
	type point struct {
		n                          int
		write                      time.Duration
		streamBytes                uint64
		status, dry, prune         time.Duration
		statusRSS, dryRSS, pruneRS int64
	}
	var pts []point
	for _, n := range sizes {
		pt := point{n: n}
		func() {
			ctx := b.ctx
			nats := testenv.StartNATS(s)
			_, js := nats.Connect(s)
			str, err := events.EnsureStream(ctx, js, events.StreamOptions{})
			s.check(err, "stream")
			dir := filepath.Join(s.TempDir(), fmt.Sprintf("cache-%d", n))
			s.check(synthcache.Init(dir), "cache")
			defer removeAll(dir)

			progress("scale: writing %d nixpkgs-shaped paths and their built events", n)
			old := time.Now().Add(-60 * 24 * time.Hour)
			start := time.Now()
			var last string
			var window []jetstream.PubAckFuture
			drain := func() {
				for _, f := range window {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						s.Fatalf("publish built: %v", err)
					case <-time.After(time.Minute):
						s.Fatalf("built events not acknowledged")
					}
				}
				window = window[:0]
			}
			err = synthcache.WriteNixpkgs(dir, "scale", n, 8, old, func(i int, p synthcache.Path) error {
				ev := &events.Built{Header: events.Header{Time: old.Add(time.Duration(i) * time.Second)}, Host: "a",
					StoreDir: "/nix/store", OutPaths: []string{p.StorePath}}
				events.Seal(ev)
				data, err := events.Encode(ev)
				if err != nil {
					return err
				}
				f, err := js.PublishAsync(events.SubjectBuilt, data)
				if err != nil {
					return err
				}
				if window = append(window, f); len(window) == 1000 {
					drain()
				}
				last = p.StorePath
				return nil
			})
			s.check(err, "write the cache")
			drain()
			pt.write = time.Since(start)
			info, err := str.Info(ctx)
			s.check(err, "stream info")
			pt.streamBytes = info.State.Bytes

			env := []string{"NIX_IPFS_NATS_URL=" + nats.URL, "NIX_IPFS_LOG_LEVEL=warn"}
			s.run(ctx, env, b.bins+"/nix-ipfs", "pin", "add", "release", last, "--cache-dir", dir)
			pol := []string{"--cache-dir", dir, "--keep-for", "720h", "--grace", "1h"}
			progress("scale: status --cache-dir over %d paths", n)
			// --status-timeout bounds the whole collection, the cache's
			// index included: with --cache-dir its default is 15
			// minutes; the bench allows more on a loaded machine.
			pt.status, pt.statusRSS, _ = timedRSS(ctx, s, env, b.bins+"/nix-ipfs", append([]string{"status", "--status-timeout", "30m"}, pol...)...)
			progress("scale: prune --dry-run over %d paths", n)
			pt.dry, pt.dryRSS, _ = timedRSS(ctx, s, env, b.bins+"/nix-ipfs", append([]string{"prune", "--dry-run", "--json", "--kubo-api", "none"}, pol...)...)
			progress("scale: prune over %d paths", n)
			pt.prune, pt.pruneRS, _ = timedRSS(ctx, s, env, b.bins+"/nix-ipfs", append([]string{"prune", "--kubo-api", "none"}, pol...)...)
		}()
		pts = append(pts, pt)
	}
	for _, pt := range pts {
		aimM := int64(512 << 20)
		if pt.n <= 300_000 {
			aimM = 256 << 20
		}
		peak := max(pt.statusRSS, pt.dryRSS, pt.pruneRS)
		sec.add(Row{What: fmt.Sprintf("%d paths: status --cache-dir / prune --dry-run / prune: time", pt.n), Ratio: nan,
			Ours: fmtDur(pt.status) + " / " + fmtDur(pt.dry) + " / " + fmtDur(pt.prune), Aim: "< 120 s (1M)", Verdict: verdict(max(pt.status, pt.dry, pt.prune) < 120*time.Second)})
		sec.add(Row{What: fmt.Sprintf("%d paths: peak RSS (status / dry run / prune)", pt.n), Ratio: nan,
			Ours: fmtBytes(pt.statusRSS) + " / " + fmtBytes(pt.dryRSS) + " / " + fmtBytes(pt.pruneRS), Aim: "< " + fmtBytes(aimM), Verdict: verdict(peak < aimM)})
		sec.add(Row{What: fmt.Sprintf("%d paths: the stream of %d built events, its bytes", pt.n, pt.n), Ratio: nan,
			Ours: fmtBytes(int64(pt.streamBytes)), Aim: "", Verdict: ""})
	}
	if len(pts) >= 2 {
		a, z := pts[0], pts[len(pts)-1]
		// The slope, not peak/n: at small sizes the runtime's fixed
		// megabytes dominate.
		slope := float64(max(z.pruneRS, z.dryRSS)-max(a.pruneRS, a.dryRSS)) / float64(z.n-a.n)
		sec.add(Row{What: fmt.Sprintf("Peak RSS a path, the slope between %d and %d paths", a.n, z.n), Ratio: nan,
			Ours: fmt.Sprintf("%.0f B", slope), Aim: "< 1 KB (no KB per path)", Verdict: verdict(slope < 1024)})
	}
	sec.detailf("Each size: a cache written by `synthcache.WriteNixpkgs` (8 core paths in a chain referenced by every path, libraries in chains of 64, " +
		"leaves referencing a core path and one or two libraries; a 64-byte NAR each), one \"built\" event per path a month old or more, one named pin on the last path; " +
		"`status --cache-dir`, `prune --dry-run --json` and `prune` with `--keep-for 720h --grace 1h --kubo-api none`: nearly every path retires (the worst case for the plan). " +
		"Time is the whole command's wall clock (the machine is shared: read it as loaded); peak RSS is its maxrss.\n")
	benchScaleMirror(b, s, sec, sizes)
}

// timedRSS runs a command and returns its wall time, peak RSS and output.
//
// The peak is measured by GNU time when there is one: Go starts a child
// with vfork, so the child's own ru_maxrss starts at this process's RSS
// (Linux records the shared address space's high-water mark at exec), and
// a 20 MiB command would be reported as large as the bench itself.
func timedRSS(ctx context.Context, s *scope, env []string, name string, args ...string) (time.Duration, int64, string) {
	rssFile := filepath.Join(s.TempDir(), "maxrss")
	timeBin, _ := exec.LookPath("time")
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		timeBin = "/usr/bin/time"
	}
	var cmd *exec.Cmd
	if timeBin != "" {
		cmd = exec.CommandContext(ctx, timeBin, append([]string{"-f", "%M", "-o", rssFile, name}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, name, args...)
	}
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	out := stdout.Bytes()
	if err != nil {
		s.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	if timeBin != "" {
		b, err := os.ReadFile(rssFile)
		s.check(err, "GNU time's output")
		kb, err := strconv.ParseInt(strings.TrimSpace(lastLines(string(b), 1)), 10, 64)
		s.check(err, "GNU time's maxrss")
		return took, kb * 1024, string(out)
	}
	return took, int64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) * 1024, string(out)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
