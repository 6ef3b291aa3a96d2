// Package gc frees host A's kubo of the NARs the mirrors hold: it unpins
// from A the CIDs that enough distinct mirror nodes confirmed with
// "pinned" events, then runs kubo's repo GC (`nix-ipfs gc`). It is
// retention's other half: prune decides what the cache keeps, gc what A's
// node needs to keep once copies live elsewhere (docs/MIRROR.md).
package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// Config is gc's settings.
type Config struct {
	NATS            config.NATS
	Log             config.Log
	KuboAPI         string
	MinMirrors      int
	RequireVerified bool
	DryRun          bool
	VerifyFilestore bool
}

// Register adds gc's flags.
func (c *Config) Register(s *config.Set) {
	c.NATS.Register(s)
	c.Log.Register(s, "console")
	s.StringVar(&c.KuboAPI, "kubo-api", "", "kubo RPC API of host A's node, the one to free: http URL, host:port or multiaddr (default: $IPFS_PATH/api, else ~/.ipfs/api)")
	s.IntVar(&c.MinMirrors, "min-mirrors", 0, "unpin a CID only once at least this many distinct mirror nodes (other than this one) have confirmed it with a pinned event (required, at least 1)")
	s.BoolVar(&c.RequireVerified, "require-verified", false, "count only confirmations from mirrors that read the bytes back (mirror --verify)")
	s.BoolVar(&c.DryRun, "dry-run", false, "list what would be unpinned, and unpin nothing")
	s.BoolVar(&c.VerifyFilestore, "verify-filestore", false, "after repo gc, check every filestore reference (--ipfs-nocopy) against its NAR file and fail if one is broken (reads every referenced file)")
}

// Validate checks the settings that need no network.
func (c *Config) Validate() error {
	if c.MinMirrors < 1 {
		return fmt.Errorf("--min-mirrors %d: must be at least 1 (a CID no mirror holds must stay pinned here)", c.MinMirrors)
	}
	return nil
}

// IPFS is what gc needs from host A's node.
type IPFS interface {
	Pins(ctx context.Context) ([]cid.Cid, error)
	Unpin(ctx context.Context, c cid.Cid) error
	RepoGC(ctx context.Context) error
	Self(ctx context.Context) (ipfs.Node, error)
}

var _ IPFS = (*ipfs.Kubo)(nil)

// Confirmations are, per CID, the mirror nodes that announced holding it:
// peer ID to the mirror name it used.
type Confirmations map[string]map[string]string

// CountConfirmations reads pinned events into Confirmations. A node counts
// once per CID however many mirror names it pins under, since it holds one
// copy; self (the node to be freed) never counts; with requireVerified only
// pins whose bytes were read back count.
func CountConfirmations(pinned []*events.Pinned, self string, requireVerified bool) Confirmations {
	out := Confirmations{}
	for _, p := range pinned {
		if p.Node.PeerID == "" || p.Node.PeerID == self || (requireVerified && !p.Verified) {
			continue
		}
		m := out[p.CID]
		if m == nil {
			m = map[string]string{}
			out[p.CID] = m
		}
		if _, ok := m[p.Node.PeerID]; !ok {
			m[p.Node.PeerID] = p.Mirror
		}
	}
	return out
}

// Mirrors returns the names of the mirrors confirming c, sorted.
func (cf Confirmations) Mirrors(c string) []string {
	var out []string
	for _, name := range cf[c] {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Plan splits pins into those confirmed by at least min mirror nodes, which
// may be unpinned, and the number kept.
func Plan(pins []cid.Cid, cf Confirmations, min int) (unpin []cid.Cid, kept int) {
	for _, c := range pins {
		if min >= 1 && len(cf[c.String()]) >= min {
			unpin = append(unpin, c)
		} else {
			kept++
		}
	}
	sort.Slice(unpin, func(i, j int) bool { return unpin[i].String() < unpin[j].String() })
	return unpin, kept
}

// ReadPinned returns every pinned event in the stream.
func ReadPinned(ctx context.Context, js jetstream.JetStream, stream string, log *zap.Logger) ([]*events.Pinned, error) {
	var out []*events.Pinned
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectPinnedPrefix + ">"}, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second}
	err := events.Scan(ctx, js, stream, events.ScanOptions{Consumer: cfg}, func(m jetstream.Msg) error {
		ev, err := events.Decode(m.Data())
		if err != nil {
			log.Warn("ignoring an invalid event", zap.String("subject", m.Subject()), zap.Error(err))
			return nil
		}
		p, ok := ev.(*events.Pinned)
		if !ok || m.Subject() != events.SubjectPinned(p.Mirror) {
			log.Warn("ignoring an event that is not a mirror's pinned event", zap.String("subject", m.Subject()),
				zap.String("type", events.Head(ev).Type))
			return nil
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// Options configure Collect.
type Options struct {
	Stream          string
	MinMirrors      int
	RequireVerified bool
	DryRun          bool
	Logger          *zap.Logger
}

// Summary is what Collect did.
type Summary struct {
	Pins      int // recursive pins on the node
	Confirmed int // of those, confirmed by enough mirrors
	Unpinned  int
	Failed    int
}

// Collect unpins from node the CIDs it has pinned that at least o.MinMirrors
// distinct mirror nodes have confirmed, then runs the node's garbage
// collection. It writes one line per CID to out. With o.DryRun it only
// lists them.
func Collect(ctx context.Context, js jetstream.JetStream, node IPFS, o Options, out io.Writer) (Summary, error) {
	var sum Summary
	if o.MinMirrors < 1 {
		return sum, errs.Errorf(errs.Invalid, "gc: min mirrors %d: must be at least 1", o.MinMirrors)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Stream == "" {
		o.Stream = events.DefaultStream
	}
	self, err := node.Self(ctx)
	if err != nil {
		return sum, err
	}
	pinned, err := ReadPinned(ctx, js, o.Stream, o.Logger)
	if err != nil {
		return sum, err
	}
	paths := map[string]string{}
	for _, p := range pinned {
		paths[p.CID] = p.StorePath
	}
	cf := CountConfirmations(pinned, self.PeerID, o.RequireVerified)
	// The pins are listed after the confirmations are read: a CID pinned
	// in between is unconfirmed anyway.
	pins, err := node.Pins(ctx)
	if err != nil {
		return sum, err
	}
	unpin, _ := Plan(pins, cf, o.MinMirrors)
	sum.Pins, sum.Confirmed = len(pins), len(unpin)
	verb := "unpinned"
	if o.DryRun {
		verb = "would unpin"
	}
	var failed []error
	for _, c := range unpin {
		if !o.DryRun {
			if err := node.Unpin(ctx, c); err != nil {
				if ctx.Err() != nil {
					return sum, ctx.Err()
				}
				o.Logger.Error("unpin failed", zap.String("cid", c.String()), zap.Error(err))
				failed = append(failed, err)
				sum.Failed++
				continue
			}
			sum.Unpinned++
		}
		fmt.Fprintf(out, "%s %s %s (mirrors: %s)\n", verb, c, paths[c.String()], strings.Join(cf.Mirrors(c.String()), ", "))
	}
	if o.DryRun {
		fmt.Fprintf(out, "dry run: %d of %d pins confirmed by at least %d mirror(s) would be unpinned; nothing was changed\n",
			sum.Confirmed, sum.Pins, o.MinMirrors)
		return sum, nil
	}
	start := time.Now()
	if err := node.RepoGC(ctx); err != nil {
		return sum, fmt.Errorf("after unpinning %d CIDs: %w", sum.Unpinned, err)
	}
	fmt.Fprintf(out, "unpinned %d of %d pins (confirmed by at least %d mirror(s)); %d kept; repo gc took %s\n",
		sum.Unpinned, sum.Pins, o.MinMirrors, sum.Pins-sum.Unpinned, time.Since(start).Round(time.Millisecond))
	if len(failed) > 0 {
		return sum, fmt.Errorf("%d unpins failed: %w", len(failed), errors.Join(failed...))
	}
	return sum, nil
}

// Run runs gc as the CLI does.
func Run(ctx context.Context, cfg Config, log *zap.Logger, out io.Writer) error {
	nc, js, err := cfg.NATS.ConnectOnce("nix-ipfs gc")
	if err != nil {
		return err
	}
	defer nc.Close()
	kubo, err := ipfs.Dial(cfg.KuboAPI)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = kubo.Ping(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("kubo does not answer: %w", err)
	}
	_, err = Collect(ctx, js, kubo, Options{
		Stream: cfg.NATS.Stream, MinMirrors: cfg.MinMirrors, RequireVerified: cfg.RequireVerified,
		DryRun: cfg.DryRun, Logger: log,
	}, out)
	if err == nil && cfg.VerifyFilestore {
		err = VerifyFilestore(ctx, kubo, out)
	}
	return err
}

// VerifyFilestore checks every filestore reference of host A's kubo (the
// NARs the publisher added with --ipfs-nocopy) against its file, prints a
// summary and the broken ones, and fails if any is broken. After repo GC
// every reference left belongs to a pinned NAR, so a broken one is a NAR
// that was moved, changed or deleted while still pinned: A cannot serve it
// over IPFS (docs/OPERATIONS.md, "Zero-copy", says what to do).
func VerifyFilestore(ctx context.Context, k *ipfs.Kubo, out io.Writer) error {
	refs, err := k.FilestoreVerify(ctx, "")
	if err != nil {
		return err
	}
	bad := map[string]string{} // file -> status
	for _, r := range refs {
		if r.Status != "ok" {
			bad[r.Path] = r.Status
		}
	}
	if len(bad) == 0 {
		fmt.Fprintf(out, "filestore: %d references, all ok\n", len(refs))
		return nil
	}
	files := make([]string, 0, len(bad))
	for f := range bad {
		files = append(files, f)
	}
	sort.Strings(files)
	fmt.Fprintf(out, "filestore: %d references, broken ones in %d files (paths relative to kubo's filestore root):\n", len(refs), len(files))
	for _, f := range files {
		fmt.Fprintf(out, "  %s: %s\n", bad[f], f)
	}
	return fmt.Errorf("filestore: %d referenced files are missing, changed or unreadable, so kubo cannot serve their blocks: put the files back, or unpin their NARs' CIDs and run gc again", len(files))
}
