package cli

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/retention"
	"github.com/nix-ipfs/nix-ipfs/status"
)

func init() {
	register("status", command{
		summary: "print the stream, each consumer's backlog, dead letters and mirror lag; with --cache-dir, the cache's size, live roots, pins and what a prune would free",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var n config.NATS
			n.Register(s)
			asJSON := s.Bool("json", false, "print JSON instead of a table")
			last := s.Int("dead-letters", 10, "show this many of the latest dead letters")
			timeout := s.Duration("status-timeout", 10*time.Second, "give up reaching NATS after this long")
			var pol retention.PolicyFlags
			pol.Register(s)
			return func(ctx context.Context, env *Env) error {
				if err := pol.Validate(nil, false); err != nil {
					return usagef("%v", err)
				}
				if err := checked(ctx); err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				nc, err := n.Connect("nix-ipfs status", zap.NewNop())
				if err != nil {
					return err
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					return err
				}
				r, err := status.Collect(ctx, js, n.Stream, *last)
				if err != nil {
					return err
				}
				if pol.CacheDir != "" {
					r.Retention, err = status.CollectRetention(ctx, js, n.Stream, pol.CacheDir, pol.Policy())
					if err != nil {
						return err
					}
				}
				if *asJSON {
					return r.WriteJSON(env.Stdout)
				}
				r.WriteText(env.Stdout)
				r.Retention.WriteText(env.Stdout)
				return nil
			}
		},
	})
}
