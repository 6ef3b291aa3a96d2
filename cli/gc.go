package cli

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/retention/gc"
)

func init() {
	register("gc", command{
		summary: "unpin from host A's kubo only the NARs at least --min-mirrors mirrors confirmed, then run its repo gc",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg gc.Config
			cfg.Register(s)
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, cfg.Validate, &cfg.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				return gc.Run(ctx, cfg, log, env.Stdout)
			}
		},
	})
}
