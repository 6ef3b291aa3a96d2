package cli

import (
	"context"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/mirror"
)

func init() {
	register("mirror", command{
		summary: "pin every published NAR on this host's kubo as it arrives, and announce each pin (host B; see docs/MIRROR.md)",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg mirror.Config
			cfg.Register(s)
			metrics := metricsFlag(s, "127.0.0.1:9432")
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, cfg.Validate, &cfg.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				w, err := mirror.Open(ctx, cfg, log)
				if err != nil {
					return err
				}
				defer w.Close()
				stop := serveMetrics(ctx, *metrics, log, natsHealth(w.JS))
				defer stop()
				log.Info("mirror running", zap.String("mirror", cfg.Name), zap.String("durable", mirror.Durable(cfg.Name)),
					zap.Int("concurrency", cfg.Pin.Concurrency), zap.Duration("pin_timeout", cfg.Pin.PinTimeout),
					zap.Bool("verify", cfg.Pin.Verify))
				return w.Run(ctx)
			}
		},
	})
}
