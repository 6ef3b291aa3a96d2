package cli

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/publisher"
)

func init() {
	register("publisher", command{
		summary: "publish built store paths to a signed file:// cache and IPFS (host A)",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var cfg publisher.Config
			cfg.Register(s)
			metrics := metricsFlag(s, "127.0.0.1:9431")
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, cfg.Validate, &cfg.Log)
				if err != nil {
					return err
				}
				defer log.Sync()
				w, err := publisher.Open(ctx, cfg, log)
				if err != nil {
					return err
				}
				defer w.Close()
				stop := serveMetrics(ctx, *metrics, log)
				defer stop()
				log.Info("publisher running", zap.String("cache_dir", cfg.CacheDir), zap.String("durable", cfg.Durable))
				return w.Run(ctx)
			}
		},
	})
}

// serveMetrics serves /metrics and /healthz on addr until ctx is done.
func serveMetrics(ctx context.Context, addr string, log *zap.Logger) func() {
	if addr == "" {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Error("metrics server", zap.Error(err))
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
}
