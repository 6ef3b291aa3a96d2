// Package httpserve runs an HTTP server for as long as a context lives,
// the same way for every server nix-ipfs has: the cache (serve, up), the
// substituter, and the workers' metrics.
package httpserve

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// ShutdownTimeout bounds how long ListenAndServe waits for requests in
// flight once its context ends.
const ShutdownTimeout = 10 * time.Second

// ListenAndServe serves h on addr until ctx ends, then drains requests in
// flight for at most ShutdownTimeout. It logs "<what> listening" with the
// address it listens on (port 0 picks one), so callers and tests can find it.
func ListenAndServe(ctx context.Context, addr string, h http.Handler, log *zap.Logger, what string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	log.Info(what+" listening", zap.String("addr", ln.Addr().String()), zap.String("url", "http://"+ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info(what + " stopped")
	return nil
}
