package cli

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/nix-ipfs/nix-ipfs/config"
)

func init() {
	register("version", command{
		summary: "print the version",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			return func(ctx context.Context, env *Env) error {
				v := "(devel)"
				if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
					v = bi.Main.Version
				}
				fmt.Fprintln(env.Stdout, "nix-ipfs", v)
				return nil
			}
		},
	})
}
