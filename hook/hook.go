// Package hook is nix-ipfs-hook: what Nix's post-build-hook runs after every
// local build. It turns DRV_PATH and OUT_PATHS into one "built" event on
// JetStream and returns at once.
//
// Nix waits for the hook, and stops running further builds when it exits
// non-zero, so the hook never fails the build: when NATS is down, slow,
// refuses, or the settings are broken, the event goes to an on-disk spool
// (one fsynced file per event) and the hook still exits 0. The next
// successful run, or `nix-ipfs-hook flush` from a timer, publishes the
// spool, oldest first, deleting each file only after its ack. Events carry a
// deterministic id, so a file published twice is stored once.
package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Defaults.
const (
	DefaultConfigFile   = "/etc/nix-ipfs/hook.conf"
	DefaultSpoolDir     = "/var/lib/nix-ipfs/spool"
	DefaultTimeout      = 500 * time.Millisecond
	DefaultFlushTimeout = 30 * time.Second
)

// Config is the hook's settings.
type Config struct {
	NATS         config.NATS
	Store        config.Store
	SpoolDir     string
	Timeout      time.Duration
	FlushTimeout time.Duration
	Host         string
}

// Register adds the hook's flags (and so its environment variables and
// config-file keys) to s.
func (c *Config) Register(s *config.Set) {
	c.NATS.Register(s)
	c.Store.Register(s)
	s.StringVar(&c.SpoolDir, "spool-dir", DefaultSpoolDir, "where events wait when NATS cannot take them")
	s.DurationVar(&c.Timeout, "timeout", DefaultTimeout, "the most a hook run spends on NATS before it spools the event and returns")
	s.DurationVar(&c.FlushTimeout, "flush-timeout", DefaultFlushTimeout, "the most the flush command spends connecting and publishing")
	host, _ := os.Hostname()
	s.StringVar(&c.Host, "host", host, "this builder's name in events")
}

// Hook handles builds.
type Hook struct {
	Config Config
	// Stderr gets one line per problem; Nix shows it in the build log.
	Stderr io.Writer
	Now    func() time.Time
}

func (h *Hook) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Hook) warnf(format string, args ...any) {
	fmt.Fprintf(h.Stderr, "nix-ipfs-hook: "+format+"\n", args...)
}

// Result says what a hook run did.
type Result struct {
	Event     *events.Built
	Published bool
	Spooled   string // the spool file, if the event was spooled
	Drained   int    // spooled events published by this run
	Skipped   string // why a Hydra notification made no event
}

// BuildEvent reads the build's outputs from env (OUT_PATHS, DRV_PATH) and
// returns the event. Output paths that are not store paths are reported and
// left out. When OUT_PATHS is empty (Nix 2.8.0 does this, NixOS/nix#6446),
// the outputs are read from the derivation file.
func (h *Hook) BuildEvent(getenv func(string) string) (*events.Built, error) {
	storeDir := h.Config.Store.Dir
	drv := strings.TrimSpace(getenv("DRV_PATH"))
	if drv != "" {
		if err := storepath.Validate(storeDir, drv); err != nil || !strings.HasSuffix(drv, ".drv") {
			h.warnf("ignoring DRV_PATH %q: not a .drv store path under %s", drv, storeDir)
			drv = ""
		}
	}
	outs := strings.Fields(getenv("OUT_PATHS"))
	if len(outs) == 0 {
		if drv == "" {
			return nil, errors.New("OUT_PATHS and DRV_PATH are both empty: nothing to publish (is this running as Nix's post-build-hook?)")
		}
		var err error
		outs, err = DrvOutputs(drv)
		if err != nil {
			return nil, fmt.Errorf("OUT_PATHS is empty and reading outputs from %s failed: %w", drv, err)
		}
	}
	return h.newBuilt(drv, outs, "", 0, h.now())
}

// newBuilt validates the outputs (reporting and dropping those that are not
// store paths) and returns the sealed event.
func (h *Hook) newBuilt(drv string, outs []string, job string, hydraBuild int64, at time.Time) (*events.Built, error) {
	storeDir := h.Config.Store.Dir
	var valid []string
	for _, p := range outs {
		if err := storepath.Validate(storeDir, p); err != nil {
			h.warnf("ignoring output %q: %v", p, err)
			continue
		}
		valid = append(valid, p)
	}
	if len(valid) == 0 {
		return nil, errors.New("no valid output store paths")
	}
	if len(valid) > 1024 {
		return nil, fmt.Errorf("%d outputs: more than an event carries (1024)", len(valid))
	}
	ev := &events.Built{Host: h.Config.Host, StoreDir: storeDir, DrvPath: drv, OutPaths: valid, Job: job, HydraBuild: hydraBuild}
	if ev.Host == "" {
		ev.Host = "unknown"
	}
	ev.Time = at.UTC()
	events.Seal(ev)
	return ev, nil
}

// DrvOutputs returns the output paths recorded in a derivation file, sorted.
func DrvOutputs(drvPath string) ([]string, error) {
	f, err := os.Open(drvPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := derivation.ReadDerivation(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("parse derivation: %w", err)
	}
	var outs []string
	for name, o := range d.Outputs {
		if o.Path == "" {
			return nil, fmt.Errorf("output %q has no path in the derivation (content-addressed?)", name)
		}
		outs = append(outs, o.Path)
	}
	sort.Strings(outs)
	return outs, nil
}

// Run handles one build: publish its event within Config.Timeout or spool
// it, then publish what is spooled in the time left. It returns an error
// only to describe what went wrong; the caller exits 0 whatever it is.
func (h *Hook) Run(ctx context.Context, getenv func(string) string) (Result, error) {
	ev, err := h.BuildEvent(getenv)
	if err != nil {
		return Result{}, err
	}
	return h.Send(ctx, ev)
}

// Send publishes ev within Config.Timeout or spools it, then publishes what
// is spooled in the time left. Like Run, its error only describes.
func (h *Hook) Send(ctx context.Context, ev *events.Built) (Result, error) {
	res := Result{Event: ev}
	data, err := events.Encode(ev)
	if err != nil {
		return res, fmt.Errorf("event does not validate: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, h.Config.Timeout)
	defer cancel()

	js, closeNC, err := h.connect(ctx, h.Config.Timeout)
	if err == nil {
		defer closeNC()
		err = h.publish(ctx, js, ev.ID, data)
	}
	if err != nil {
		spoolErr := h.spool(&res, ev.ID, data)
		if spoolErr != nil {
			return res, fmt.Errorf("NATS failed (%v) and spooling failed too: %w; the event for %s is lost", err, spoolErr, strings.Join(ev.OutPaths, " "))
		}
		return res, fmt.Errorf("NATS at %s unavailable (%v): event spooled to %s", h.Config.NATS.URL, err, res.Spooled)
	}
	res.Published = true
	res.Drained, _ = h.drain(ctx, js, false)
	return res, nil
}

// Flush publishes every spooled event, oldest first. It is for a timer and
// for people; it fails loudly where Run would not.
func (h *Hook) Flush(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, h.Config.FlushTimeout)
	defer cancel()
	js, closeNC, err := h.connect(ctx, h.Config.FlushTimeout)
	if err != nil {
		return 0, fmt.Errorf("connect to NATS at %s: %w", h.Config.NATS.URL, err)
	}
	defer closeNC()
	// Least-privilege credentials may not allow it, and NATS then sends
	// no answer at all: bound the wait, so that publishing still has its
	// time (deploy/nats/nats-server.conf gives the hook no stream rights).
	sctx, scancel := context.WithTimeout(ctx, min(5*time.Second, h.Config.FlushTimeout/4))
	if _, err := events.EnsureStream(sctx, js, h.Config.NATS.StreamOptions()); err != nil {
		h.warnf("could not ensure stream %s (continuing): %v", h.Config.NATS.Stream, err)
	}
	scancel()
	return h.drain(ctx, js, true)
}

func (h *Hook) spool(res *Result, id string, data []byte) error {
	p, err := Spool{Dir: h.Config.SpoolDir}.Put(id, data, h.now())
	res.Spooled = p
	return err
}

func (h *Hook) connect(ctx context.Context, timeout time.Duration) (jetstream.JetStream, func(), error) {
	opts, err := h.Config.NATS.Options("nix-ipfs-hook")
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	// nats.go tries the servers of a comma-separated list one after
	// another, each with the whole dial timeout: share the budget, so
	// that a list of unreachable servers still spools within --timeout.
	if n := len(strings.Split(h.Config.NATS.URL, ",")); n > 1 {
		timeout /= time.Duration(n)
	}
	opts = append(opts, nats.Timeout(timeout), nats.MaxReconnects(0), nats.NoReconnect())
	nc, err := nats.Connect(h.Config.NATS.URL, opts...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}

// publish sends one encoded event and waits for the stream's ack. When no
// stream takes the subject yet (a fresh NATS), it creates the stream once.
func (h *Hook) publish(ctx context.Context, js jetstream.JetStream, id string, data []byte) error {
	// No retries on "no responders": nats.go would wait 250 ms per retry,
	// half the hook's budget, for a stream that is simply missing.
	_, err := js.Publish(ctx, events.SubjectBuilt, data, jetstream.WithMsgID(id), jetstream.WithRetryAttempts(0))
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		if _, serr := events.EnsureStream(ctx, js, h.Config.NATS.StreamOptions()); serr != nil {
			return fmt.Errorf("%w (and creating stream %s failed: %v)", err, h.Config.NATS.Stream, serr)
		}
		_, err = js.Publish(ctx, events.SubjectBuilt, data, jetstream.WithMsgID(id))
	}
	return err
}

// drain publishes spooled events oldest first until done or ctx ends. Only
// one process drains at a time; the others skip it.
func (h *Hook) drain(ctx context.Context, js jetstream.JetStream, strict bool) (int, error) {
	sp := Spool{Dir: h.Config.SpoolDir}
	files, err := sp.List()
	if err != nil || len(files) == 0 {
		return 0, err
	}
	unlock, ok := sp.TryLock()
	if !ok {
		if strict {
			return 0, fmt.Errorf("spool %s is being drained by another process", sp.Dir)
		}
		return 0, nil
	}
	defer unlock()
	n := 0
	for _, f := range files {
		if ctx.Err() != nil {
			return n, fmt.Errorf("stopped with %d spooled events left: %w", len(files)-n, ctx.Err())
		}
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // another drainer got it
		}
		if err != nil {
			return n, err
		}
		ev, err := events.Decode(data)
		if err != nil {
			dst, qerr := sp.Quarantine(f)
			h.warnf("spooled file %s is not a valid event (%v); moved to %s (%v)", f, err, dst, qerr)
			continue
		}
		if err := h.publish(ctx, js, events.Head(ev).ID, data); err != nil {
			return n, fmt.Errorf("publish spooled %s: %w", f, err)
		}
		if err := sp.Remove(f); err != nil {
			return n, fmt.Errorf("remove published %s: %w", f, err)
		}
		n++
	}
	return n, nil
}
