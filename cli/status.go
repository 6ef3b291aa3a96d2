package cli

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/httpserve"
	"github.com/nix-ipfs/nix-ipfs/retention"
	"github.com/nix-ipfs/nix-ipfs/status"
	"github.com/nix-ipfs/nix-ipfs/statuspage"
)

// cacheDirTimeout is status's default --status-timeout with --cache-dir:
// the timeout bounds the whole collection, and the cache's index takes
// about 10 s a 100,000 paths on a loaded machine (docs/BENCHMARKS.md,
// "Scale").
const cacheDirTimeout = 15 * time.Minute

func init() {
	register("status", command{
		summary: "print the stream, each consumer's backlog, dead letters, the last hour's flow, each mirror's share and the latest builds; --closure: who holds each path; --listen: serve it as a page",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var n config.NATS
			n.Register(s)
			var lc config.Log
			lc.Register(s, "console")
			asJSON := s.Bool("json", false, "print JSON instead of a table")
			last := s.Int("dead-letters", 10, "show this many of the latest dead letters")
			timeout := s.Duration("status-timeout", 10*time.Second, "give up after this long (the whole collection); with --cache-dir the default is "+cacheDirTimeout.String()+" instead: reading the index of a cache of a million paths takes minutes")
			listen := s.String("listen", "", "serve the status page here (e.g. 127.0.0.1:8485; its JSON at /status.json, its figures for Prometheus at /metrics) until stopped, instead of printing")
			refresh := s.Duration("refresh", 10*time.Second, "with --listen: how often the page reloads itself")
			closure := s.String("closure", "", closureHelp)
			k := s.Int("mirrors", 1, mirrorsHelp)
			var pol retention.PolicyFlags
			pol.Register(s)
			return func(ctx context.Context, env *Env) error {
				if err := pol.Validate(nil, false); err != nil {
					return usagef("%v", err)
				}
				if src := s.Sources["status-timeout"]; pol.CacheDir != "" && (src == "" || src == "default") {
					*timeout = cacheDirTimeout
				}
				log, err := prepare(ctx, func() error { return checkMirrors(*k) }, &lc)
				if err != nil {
					return err
				}
				defer log.Sync()
				nc, js, err := connectJS(&n, "nix-ipfs status", zap.NewNop())
				if err != nil {
					return err
				}
				defer nc.Close()
				col := status.NewCollector(js, status.CollectorOptions{Stream: n.Stream, LastDead: *last, CacheDir: pol.CacheDir, Policy: pol.Policy(), Log: log})
				if *listen != "" {
					reg := prometheus.NewRegistry()
					reg.MustRegister(status.NewMetrics(col, *timeout, log))
					mux := http.NewServeMux()
					mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
					mux.Handle("/", statuspage.New(col, statuspage.Options{Refresh: *refresh, Timeout: *timeout, Log: log}))
					return httpserve.ListenAndServe(ctx, *listen, mux, log, "status page (and its /metrics)")
				}
				ctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				if *closure != "" {
					c, err := col.Tracker().Check(ctx, []string{*closure}, *k)
					if err != nil {
						return err
					}
					if *asJSON {
						return writeJSON(env.Stdout, c)
					}
					c.WriteText(env.Stdout)
					return nil
				}
				r, err := col.Collect(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					return r.WriteJSON(env.Stdout)
				}
				r.WriteText(env.Stdout)
				r.Overview.WriteText(env.Stdout)
				r.Retention.WriteText(env.Stdout)
				return nil
			}
		},
	})
}
