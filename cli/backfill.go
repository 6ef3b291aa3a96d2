package cli

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/mirrorfill"
)

func init() {
	register("backfill", command{
		summary: "pin every IPFSHash in an existing cache's narinfos (a directory, or an http(s) URL with --paths-from) on a node",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg mirrorfill.BackfillConfig
			cfg.Register(s)
			metrics := metricsFlag(s, "")
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, cfg.Validate, &cfg.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				stop := serveMetrics(ctx, *metrics, log)
				defer stop()
				return mirrorfill.RunBackfill(ctx, cfg, log, env.Stdout, env.Stderr)
			}
		},
	})
}
