package cli

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/mirror"
)

func init() {
	register("replay", command{
		summary: "re-pin the NARs published in a range of the stream (--all, --from-seq, --since) onto a mirror's node; resumable",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg mirror.ReplayConfig
			cfg.Register(s)
			metrics := s.String("metrics-addr", "", "serve Prometheus /metrics and /healthz on this address while it runs")
			return func(ctx context.Context, env *Env) error {
				if err := cfg.Validate(env.Getenv); err != nil {
					return usagef("%v", err)
				}
				if err := checked(ctx); err != nil {
					return err
				}
				log, err := cfg.Log.Logger()
				if err != nil {
					return usagef("%v", err)
				}
				defer log.Sync()
				stop := serveMetrics(ctx, *metrics, log)
				defer stop()
				return mirror.RunReplay(ctx, cfg, log, env.Stdout, env.Stderr)
			}
		},
	})
}
