package cli

import (
	"context"
	"net"

	"github.com/nix-ipfs/nix-ipfs/cachehttp"
	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/httpserve"
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
				return httpserve.ListenAndServe(ctx, *listen, cachehttp.Handler(*dir), log, "cache server")
			}
		},
	})
}
