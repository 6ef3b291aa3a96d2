package pins

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/retention/incache"
)

// Config is the pin command's settings.
type Config struct {
	NATS          config.NATS
	CacheDir      string
	CacheURL      string
	KeepRevisions int
	JSON          bool
}

// Register adds the pin command's flags.
func (c *Config) Register(s *config.Set) {
	c.NATS.Register(s)
	s.StringVar(&c.CacheDir, "cache-dir", "", "pin add: the binary cache directory, to check the path is in it")
	s.StringVar(&c.CacheURL, "cache-url", "", "pin add: the binary cache's URL (http or file), to check the path is in it, when not on the cache's host")
	s.IntVar(&c.KeepRevisions, "keep-revisions", 0, "pin add: keep this pin's last N revisions (default: the pin's setting, 1 for a new pin)")
	s.BoolVar(&c.JSON, "json", false, "pin list: print JSON")
}

// Run runs "pin add NAME STOREPATH", "pin rm NAME" or "pin list".
func Run(ctx context.Context, cfg Config, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errs.Errorf(errs.Invalid, "say what to do: pin add NAME STOREPATH, pin rm NAME, or pin list")
	}
	switch args[0] {
	case "add":
		if len(args) != 3 {
			return errs.Errorf(errs.Invalid, "usage: pin add NAME STOREPATH [--keep-revisions N]")
		}
		if cfg.CacheDir == "" && cfg.CacheURL == "" {
			return errs.Errorf(errs.Invalid, "pin add needs --cache-dir or --cache-url, to check that %s is in the cache", args[2])
		}
		if cfg.KeepRevisions < 0 {
			return errs.Errorf(errs.Invalid, "--keep-revisions %d: must be at least 1", cfg.KeepRevisions)
		}
	case "rm":
		if len(args) != 2 {
			return errs.Errorf(errs.Invalid, "usage: pin rm NAME")
		}
	case "list":
		if len(args) != 1 {
			return errs.Errorf(errs.Invalid, "usage: pin list [--json]")
		}
	default:
		return errs.Errorf(errs.Invalid, "unknown pin command %q: add, rm or list", args[0])
	}
	if len(args) > 1 {
		if err := ValidateName(args[1]); err != nil {
			return err
		}
	}
	var sp string
	if args[0] == "add" {
		sp = strings.TrimRight(args[2], "/")
		if err := incache.Check(ctx, cfg.CacheDir, cfg.CacheURL, sp); err != nil {
			return err
		}
	}
	nc, js, err := cfg.NATS.ConnectOnce("nix-ipfs pin")
	if err != nil {
		return err
	}
	defer nc.Close()
	pins, err := Open(ctx, js, cfg.NATS.StreamReplicas, args[0] == "add")
	if err != nil {
		return err
	}
	switch args[0] {
	case "add":
		pin, err := pins.Add(ctx, args[1], sp, cfg.KeepRevisions, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "pin %s: %s (keeps the last %d of %d revisions)\n", pin.Name, sp, pin.KeepRevisions, len(pin.Revisions))
	case "rm":
		if pins == nil {
			return errs.Errorf(errs.Invalid, "no pin called %q (no pins at all)", args[1])
		}
		if err := pins.Remove(ctx, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(out, "pin %s removed: its revisions stay until a prune finds them unkept\n", args[1])
	case "list":
		list, err := pins.List(ctx)
		if err != nil {
			return err
		}
		if cfg.JSON {
			if list == nil {
				list = []Pin{}
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(list)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tKEEP\tREVISION\tADDED")
		for _, p := range list {
			for i := len(p.Revisions) - 1; i >= 0; i-- {
				r := p.Revisions[i]
				name, keep := "", ""
				if i == len(p.Revisions)-1 {
					name, keep = p.Name, fmt.Sprint(p.KeepRevisions)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, keep, r.StorePath, r.Added.Format(time.RFC3339))
			}
		}
		return tw.Flush()
	}
	return nil
}
