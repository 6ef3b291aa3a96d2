// Command nix-ipfs-hook is Nix's post-build-hook for nix-ipfs. See package hook.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nix-ipfs/nix-ipfs/hook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := hook.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
