package hook

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/nix-ipfs/nix-ipfs/config"
)

const summary = `nix-ipfs-hook: Nix's post-build-hook for nix-ipfs.

Usage:
  nix-ipfs-hook                 (as post-build-hook: reads DRV_PATH, OUT_PATHS)
  nix-ipfs-hook flush [flags]   publish every spooled event, oldest first
  nix-ipfs-hook hydra [flags]   as Hydra's RunCommand: reads the file HYDRA_JSON names
  nix-ipfs-hook config-check    print the settings in effect and where each came from

In nix.conf on the builder:
  post-build-hook = /usr/local/bin/nix-ipfs-hook

Nix passes no arguments and runs the hook with the daemon's environment, so
settings come from NIX_IPFS_* variables or the config file
/etc/nix-ipfs/hook.conf (NIX_IPFS_CONFIG names another). The hook publishes
one "built" event and always exits 0: when NATS does not ack within --timeout,
the event is spooled in --spool-dir and published by the next run or by flush.

On a Hydra master, "nix-ipfs-hook hydra" in hydra.conf's <runcommand> does the
same for every build Hydra finishes, remote builds included: one "built"
event with the job (project:jobset:job) and Hydra's build id for a successful
build; other builds are skipped with a line in the RunCommand log. Same
settings, same spool, same --timeout, and it exits 0 too.`

// Main runs the hook command and returns its exit code.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	mode := "run"
	if len(args) > 0 {
		switch args[0] {
		case "flush", "config-check", "hydra":
			mode, args = args[0], args[1:]
		case "help", "-h", "-help", "--help":
			mode = "help"
		}
	}
	var cfg Config
	s := config.NewSet("nix-ipfs-hook", summary, DefaultConfigFile)
	s.SetOutput(stderr)
	cfg.Register(s)
	if mode == "help" {
		s.SetOutput(stdout)
		s.PrintUsage(stdout)
		return 0
	}
	perr := s.Parse(args, getenv)
	if perr == flag.ErrHelp {
		return 0
	}
	h := &Hook{Config: cfg, Stderr: stderr}
	if err := cfg.Store.Validate(); err != nil && perr == nil {
		perr = err
	}

	switch mode {
	case "config-check":
		s.Dump(stdout)
		if perr != nil {
			fmt.Fprintln(stderr, "nix-ipfs-hook:", perr)
			return 1
		}
		return 0
	case "flush":
		if perr != nil {
			fmt.Fprintln(stderr, "nix-ipfs-hook flush:", perr)
			return 2
		}
		n, err := h.Flush(ctx)
		fmt.Fprintf(stdout, "flushed %d spooled events\n", n)
		if err != nil {
			fmt.Fprintln(stderr, "nix-ipfs-hook flush:", err)
			return 1
		}
		return 0
	}

	if mode == "hydra" {
		// As Hydra's RunCommand: exit 0 like the hook, so a NATS outage
		// never piles up failed commands; the event waits in the spool.
		if len(args) > 0 {
			h.warnf("hydra: unexpected arguments %q (Hydra passes none); continuing", args)
		}
		if perr != nil {
			h.warnf("settings: %v (continuing with defaults for those)", perr)
		}
		res, err := h.RunHydra(ctx, getenv)
		switch {
		case err != nil:
			h.warnf("hydra: %v", err)
		case res.Skipped != "":
			fmt.Fprintf(stderr, "nix-ipfs-hook hydra: %s\n", res.Skipped)
		case res.Published:
			fmt.Fprintf(stderr, "nix-ipfs-hook hydra: Hydra build %d (%s): built event for %d outputs published\n", res.Event.HydraBuild, res.Event.Job, len(res.Event.OutPaths))
		}
		return 0
	}

	// As a post-build-hook: whatever happens, exit 0 so Nix keeps building.
	if len(args) > 0 {
		h.warnf("unexpected arguments %q (Nix passes none); continuing", args)
	}
	if perr != nil {
		h.warnf("settings: %v (continuing with defaults for those)", perr)
	}
	if _, err := h.Run(ctx, getenv); err != nil {
		h.warnf("%v", err)
	}
	return 0
}
