package latest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// Config is what `nix-ipfs latest` runs with.
type Config struct {
	Upstream    string
	TrustedKeys string
	StateDir    string
	Store       config.Store
	Timeout     time.Duration
	JSON        bool
}

// DefaultStateDir is where a reader remembers the builds it accepted:
// $XDG_STATE_HOME/nix-ipfs/latest, else ~/.local/state/nix-ipfs/latest.
func DefaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "nix-ipfs", "latest")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "nix-ipfs", "latest")
	}
	return ""
}

// Register adds the command's flags.
func (c *Config) Register(s *config.Set) {
	s.StringVar(&c.Upstream, "upstream", "", "the binary cache to read the document from: the origin (serve), a mirror's --listen, or a substituter; http://, https:// or file:///dir; several comma-separated are asked in order until one has a document signed by a trusted key")
	s.StringVar(&c.TrustedKeys, "trusted-public-keys", "", "the publishers' keys, as in nix.conf: space-separated name:base64; the document must be signed by one")
	s.StringVar(&c.StateDir, "state-dir", DefaultStateDir(), "where the newest build accepted for each job is remembered, so that an older document is refused later (empty: remember nothing)")
	c.Store.Register(s)
	s.DurationVar(&c.Timeout, "latest-timeout", 30*time.Second, "give up after this long")
	s.BoolVar(&c.JSON, "json", false, "print the verified document as JSON instead of its store paths")
}

// Validate checks the settings.
func (c *Config) Validate() error {
	if c.Upstream == "" {
		return errors.New("--upstream is required")
	}
	if strings.TrimSpace(c.TrustedKeys) == "" {
		return errors.New("--trusted-public-keys is required: a latest-build document is only as good as the key that signed it")
	}
	if _, err := narinfo.ParsePublicKeys(c.TrustedKeys); err != nil {
		return err
	}
	if c.Timeout <= 0 {
		return errors.New("--latest-timeout must be positive")
	}
	return c.Store.Validate()
}

// Run fetches job's document from the upstream, verifies its signature,
// refuses a rollback (with a state directory), and prints the outputs,
// one per line (or the document, with JSON).
func Run(ctx context.Context, c Config, job string, stdout io.Writer) error {
	keys, err := narinfo.ParsePublicKeys(c.TrustedKeys)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var d *Doc
	var failed []error
	for _, up := range strings.Split(c.Upstream, ",") {
		got, err := Get(ctx, http.DefaultClient, strings.TrimSpace(up), job, c.Store.Dir)
		if err == nil {
			err = got.Verify(keys)
		}
		if err != nil {
			failed = append(failed, err)
			continue
		}
		d = got
		break
	}
	if d == nil {
		return errs.E(errs.Worst(failed...), errors.Join(failed...))
	}
	if c.StateDir != "" {
		if err := (State{Dir: c.StateDir}).Accept(d); err != nil {
			return err
		}
	}
	if c.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	}
	for _, p := range d.Outputs {
		if _, err := fmt.Fprintln(stdout, p); err != nil {
			return err
		}
	}
	return nil
}
