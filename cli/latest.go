package cli

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/latest"
)

func init() {
	register("latest", command{
		summary: "print the outputs of a job's latest build (JOB: project:jobset:job or a derivation name), after checking the cache key's signature; for pull deployments",
		args:    true,
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg latest.Config
			cfg.Register(s)
			return func(ctx context.Context, env *Env) error {
				if err := cfg.Validate(); err != nil {
					return usagef("%v", err)
				}
				if len(env.Args) != 1 {
					return usagef("want one JOB, got %d arguments", len(env.Args))
				}
				if err := checked(ctx); err != nil {
					return err
				}
				return latest.Run(ctx, cfg, env.Args[0], env.Stdout)
			}
		},
	})
}
