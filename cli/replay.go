package cli

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/mirrorfill"
)

func init() {
	register("replay", command{
		summary: "re-pin the NARs published in a range of the stream (--all, --from-seq, --since) onto a mirror's node; resumable",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg mirrorfill.ReplayConfig
			cfg.Register(s)
			metrics := metricsFlag(s, "")
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, func() error { return cfg.Validate(env.Getenv) }, &cfg.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				stop := serveMetrics(ctx, *metrics, log)
				defer stop()
				return mirrorfill.RunReplay(ctx, cfg, log, env.Stdout, env.Stderr)
			}
		},
	})
}
