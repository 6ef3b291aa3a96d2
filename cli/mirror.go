package cli

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/httpserve"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
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
				stop := serveMetrics(ctx, *metrics, log, natsHealth(w.JS()))
				defer stop()
				if cfg.Listen != "" {
					srv, err := mirrorcache.NewServer(w.Cache(), w.Kubo(), log.Named("cache"), prometheus.DefaultRegisterer)
					if err != nil {
						return err
					}
					defer srv.Close()
					// Either one failing (the address taken) stops both.
					ctx, cancel := context.WithCancel(ctx)
					defer cancel()
					serveErr := make(chan error, 1)
					go func() {
						err := httpserve.ListenAndServe(ctx, cfg.Listen, srv, log, "mirror cache")
						cancel()
						serveErr <- err
					}()
					runErr := w.Run(ctx)
					cancel()
					if err := <-serveErr; err != nil {
						return err
					}
					return runErr
				}
				log.Info("mirror running", zap.String("mirror", cfg.Name), zap.String("durable", mirror.Durable(cfg.Name)),
					zap.Int("concurrency", cfg.Pin.Concurrency), zap.Duration("pin_timeout", cfg.Pin.PinTimeout),
					zap.Bool("verify", cfg.Pin.Verify), zap.String("cache_dir", cfg.Pin.CacheDir), zap.String("listen", cfg.Listen))
				return w.Run(ctx)
			}
		},
	})
}
