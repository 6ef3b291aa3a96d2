package cli

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/retention"
)

func init() {
	register("prune", command{
		summary: "remove from the cache every path no live root keeps (--keep-for, --keep-last-per-job, pins), announce each as retired (see docs/RETENTION.md)",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg retention.PruneConfig
			cfg.Register(s)
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, cfg.Validate, &cfg.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				return retention.RunPrune(ctx, cfg, log, env.Stdout)
			}
		},
	})
}
