package cli

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/status"
)

func init() {
	register("status", command{
		summary: "print the stream, each consumer's backlog, dead letters and mirror lag",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var n config.NATS
			n.Register(s)
			asJSON := s.Bool("json", false, "print JSON instead of a table")
			last := s.Int("dead-letters", 10, "show this many of the latest dead letters")
			timeout := s.Duration("status-timeout", 10*time.Second, "give up reaching NATS after this long")
			return func(ctx context.Context, env *Env) error {
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
				if *asJSON {
					return r.WriteJSON(env.Stdout)
				}
				r.WriteText(env.Stdout)
				return nil
			}
		},
	})
}
