package cli

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/httpserve"
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
				stop := serveMetrics(ctx, *metrics, log, natsHealth(w.JS))
				defer stop()
				log.Info("publisher running", zap.String("cache_dir", cfg.CacheDir), zap.String("durable", cfg.Durable))
				return w.Run(ctx)
			}
		},
	})
}

// serveMetrics serves /metrics and /healthz on addr until ctx is done.
// /healthz answers 503 with the reason while health returns an error.
func serveMetrics(ctx context.Context, addr string, log *zap.Logger, health ...func() error) func() {
	if addr == "" {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		for _, h := range health {
			if err := h(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ok\n"))
	})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := httpserve.ListenAndServe(ctx, addr, mux, log, "metrics"); err != nil {
			log.Error("metrics server", zap.Error(err))
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// natsHealth reports whether the worker is connected to NATS.
func natsHealth(js jetstream.JetStream) func() error {
	return func() error {
		if st := js.Conn().Status(); st != nats.CONNECTED {
			return fmt.Errorf("NATS %s", st)
		}
		return nil
	}
}
