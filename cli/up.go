package cli

import (
	"context"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/up"
)

func init() {
	register("up", command{
		summary: "everything of host A on one machine: embedded NATS, kubo, publisher, mirror, cache + substituter over HTTP",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg up.Config
			cfg.Register(s)
			return func(ctx context.Context, env *Env) error {
				// An embedded NATS unless a NATS URL was given anywhere.
				given := !strings.HasPrefix(s.Sources["nats-url"], "default")
				log, err := prepare(ctx, func() error { return cfg.Validate(given) }, &cfg.Publisher.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				return up.Run(ctx, cfg, given, log)
			}
		},
	})
}
