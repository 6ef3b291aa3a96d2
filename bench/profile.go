package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/publisher"
)

// profilePublish runs the publisher in this process, with its defaults,
// on the publish targets under a CPU profile (runtime/pprof), and kubo
// under perf record when perf is installed. It writes the profiles and
// their top functions into dir and returns a Markdown summary.
func (b *Bench) profilePublish(s *scope, ts []*pubTarget, dir string) string {
	s.check(os.MkdirAll(dir, 0o755), "profile dir")
	a := b.newHostA(s)
	env := map[string]string{
		"NIX_IPFS_NATS_URL":        a.nats.URL,
		"NIX_IPFS_KUBO_API":        a.kubo.API,
		"NIX_IPFS_CACHE_DIR":       a.cache,
		"NIX_IPFS_SECRET_KEY_FILE": b.nix.SecretKey,
	}
	// The same settings path as the binary: flags, environment, defaults.
	var cfg publisher.Config
	set := config.NewSet("publisher", "", "")
	cfg.Register(set)
	s.check(set.Parse(nil, func(k string) string { return env[k] }), "publisher settings")
	w, err := publisher.Open(b.ctx, cfg, zap.NewNop())
	s.check(err, "open publisher")
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	s.Cleanup(func() { cancel(); <-done; w.Close() })
	b.waitConsumer(s, a.js, func(c *jetstream.ConsumerInfo) bool { return c.Name == "publisher" }, "the publisher's consumer", nil)

	// kubo, from outside: perf samples every thread of the daemon.
	var perf *exec.Cmd
	perfData := filepath.Join(dir, "kubo.perf.data")
	if p, err := exec.LookPath("perf"); err == nil {
		if pid := kuboPID(a.kubo.Repo); pid != 0 {
			perf = exec.Command(p, "record", "-F", "499", "-g", "-p", fmt.Sprint(pid), "-o", perfData)
			if err := perf.Start(); err != nil {
				perf = nil
			}
		}
	}

	cpuFile := filepath.Join(dir, "publisher.cpu.pprof")
	f, err := os.Create(cpuFile)
	s.check(err, "profile file")
	s.check(pprof.StartCPUProfile(f), "start CPU profile")
	var took []string
	for _, t := range ts {
		start := time.Now()
		b.publishBuilt(s, a.js, t.outs)
		b.waitNarinfos(s, a.cache, t.paths, pubTimeout, 5*time.Millisecond, nil)
		d := time.Since(start)
		took = append(took, fmt.Sprintf("%s: %s, %s", t.key, fmtDur(d), fmtMBps(float64(t.bytes)/MB/d.Seconds())))
	}
	pprof.StopCPUProfile()
	f.Close()
	if perf != nil {
		perf.Process.Signal(syscall.SIGINT)
		perf.Wait()
	}

	var md strings.Builder
	fmt.Fprintf(&md, "Profiled run (publisher in the benchmark process, defaults; %s). Files in `%s`.\n\n", strings.Join(took, "; "), dir)
	top, err := runCmd(b.ctx, nil, "go", "tool", "pprof", "-top", "-cum", "-nodecount=40", cpuFile)
	if err == nil {
		os.WriteFile(filepath.Join(dir, "publisher.top.txt"), []byte(top), 0o644)
		fmt.Fprintf(&md, "Publisher, `go tool pprof -top -cum` (the benchmark's own goroutines, NATS server included, are in it too):\n\n```\n%s\n```\n\n", tail(top, 46))
	}
	if perf != nil {
		rep, err := runCmd(b.ctx, nil, "perf", "report", "-i", perfData, "--no-children", "--sort", "dso,symbol", "-g", "none", "--percent-limit", "1.5", "--stdio")
		if err == nil {
			os.WriteFile(filepath.Join(dir, "kubo.perf.txt"), []byte(rep), 0o644)
			var lines []string
			for _, l := range strings.Split(rep, "\n") {
				if strings.Contains(l, "%") && !strings.HasPrefix(l, "#") {
					lines = append(lines, strings.TrimRight(l, " "))
				}
			}
			if len(lines) > 30 {
				lines = lines[:30]
			}
			fmt.Fprintf(&md, "kubo daemon, `perf report --no-children` (self time):\n\n```\n%s\n```\n", strings.Join(lines, "\n"))
		}
	}
	return md.String()
}
