package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/replication"
)

// The help texts status and wait share: one meaning per setting.
const (
	closureHelp = "a store path whose closure (over the references its published events name) is checked: status prints which mirrors hold each path; wait, where it is required, waits until they do"
	mirrorsHelp = "how many mirror nodes must have confirmed a path's pin (pinned events) for it to count as replicated"
)

func checkMirrors(k int) error {
	if k < 1 {
		return fmt.Errorf("--mirrors %d: must be at least 1", k)
	}
	return nil
}

func init() {
	register("wait", command{
		summary: "wait until a store path's closure is pinned on --mirrors mirrors; exit 0 then, 1 with what is missing at --timeout (a release gate)",
		setup: func(s *config.Set) func(context.Context, *Env) error {
			var n config.NATS
			n.Register(s)
			var lc config.Log
			lc.Register(s, "console")
			closure := s.String("closure", "", closureHelp)
			k := s.Int("mirrors", 1, mirrorsHelp)
			timeout := s.Duration("timeout", 10*time.Minute, "give up after this long: exit 1 and print the paths still missing")
			every := s.Duration("poll", 2*time.Second, "read the new events this often")
			asJSON := s.Bool("json", false, "print JSON instead of a table")
			return func(ctx context.Context, env *Env) error {
				log, err := prepare(ctx, func() error {
					if *closure == "" {
						return errors.New("--closure is required: the store path to wait for")
					}
					if *timeout <= 0 || *every <= 0 {
						return errors.New("--timeout and --poll must be positive")
					}
					return checkMirrors(*k)
				}, &lc)
				if err != nil {
					return err
				}
				defer log.Sync()
				nc, js, err := connectJS(&n, "nix-ipfs wait", log)
				if err != nil {
					return err
				}
				defer nc.Close()
				ctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				start := time.Now()
				c, werr := replication.NewTracker(js, n.Stream, log).Wait(ctx, []string{*closure}, *k, *every)
				if c != nil {
					if *asJSON {
						if err := writeJSON(env.Stdout, c); err != nil {
							return err
						}
					} else {
						c.WriteText(env.Stdout)
					}
				}
				if werr != nil {
					if errors.Is(werr, replication.ErrNotReplicated) && c != nil {
						return fmt.Errorf("after %s: %d of %d paths of %s not on %d mirror(s)", time.Since(start).Round(time.Second), len(c.Missing()), len(c.Paths), *closure, *k)
					}
					return werr
				}
				return nil
			}
		},
	})
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

// connectJS connects a reader to NATS (reconnecting, as Connect does) and
// returns its JetStream.
func connectJS(n *config.NATS, name string, log *zap.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := n.Connect(name, log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
