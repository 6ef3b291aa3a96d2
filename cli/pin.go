package cli

import (
	"context"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/retention"
)

func init() {
	register("pin", command{
		summary: "named pins that prune keeps: pin add NAME STOREPATH [--keep-revisions N], pin rm NAME, pin list [--json]",
		args:    true,
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg retention.PinConfig
			cfg.Register(s)
			return func(ctx context.Context, env *Env) error {
				if err := checked(ctx); err != nil {
					return err
				}
				return retention.RunPin(ctx, cfg, env.Args, env.Stdout)
			}
		},
	})
}
