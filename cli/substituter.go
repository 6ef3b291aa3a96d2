package cli

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/httpserve"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/substituter"
)

func init() {
	register("substituter", command{
		summary: "serve a cache to stock Nix: narinfos from upstream, NARs from IPFS checked against them, upstream as fallback",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg substituter.Config
			cfg.Register(s)
			metrics := metricsFlag(s, "127.0.0.1:9432")
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, cfg.Validate, &cfg.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				opts, err := cfg.Options(log, prometheus.DefaultRegisterer)
				if err != nil {
					return usagef("%v", err)
				}
				srv, err := substituter.New(opts)
				if err != nil {
					return usagef("%v", err)
				}
				defer srv.Close()
				stop := serveMetrics(ctx, *metrics, log)
				defer stop()
				log.Info("substituter starting", zap.String("upstream", srv.Upstream()), cfg.Source())
				if rd, ok := opts.IPFS.(*ipfs.Reader); ok {
					// Logs whether NARs come through kubo's gateway or
					// RPC cat, and why, before the first request.
					rd.Discover(ctx)
				}
				// Peered before the first request, so the first NARs
				// already come from the mirrors.
				pctx, stopPeering := context.WithCancel(ctx)
				wait := srv.StartPeering(pctx)
				defer func() { stopPeering(); wait() }()
				return httpserve.ListenAndServe(ctx, cfg.Listen, srv, log, "substituter")
			}
		},
	})
}
