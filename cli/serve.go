package cli

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachehttp"
	"github.com/nix-ipfs/nix-ipfs/config"
)

func init() {
	register("serve", command{
		summary: "serve a file:// binary cache directory over HTTP (only cache files)",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var lc config.Log
			lc.Register(s, "json")
			dir := s.String("cache-dir", "", "the binary cache directory to serve (required)")
			listen := s.String("listen", "127.0.0.1:8080", "address to listen on")
			return func(ctx context.Context, env *Env) error {
				if *dir == "" {
					return usagef("--cache-dir is required")
				}
				if _, _, err := net.SplitHostPort(*listen); err != nil {
					return usagef("--listen %q: %v", *listen, err)
				}
				if err := checked(ctx); err != nil {
					return err
				}
				log, err := lc.Logger()
				if err != nil {
					return usagef("%v", err)
				}
				srv := &http.Server{Addr: *listen, Handler: cachehttp.Handler(*dir), ReadHeaderTimeout: 10 * time.Second}
				return serveUntilDone(ctx, srv, log)
			}
		},
	})
}

// serveUntilDone runs srv until ctx is done, then shuts it down gracefully.
func serveUntilDone(ctx context.Context, srv *http.Server, log *zap.Logger) error {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return err
	}
	log.Info("serving", zap.String("addr", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
