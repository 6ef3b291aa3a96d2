// Command nix-ipfs runs the nix-ipfs workers and tools as subcommands. See
// package cli, and `nix-ipfs help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nix-ipfs/nix-ipfs/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
