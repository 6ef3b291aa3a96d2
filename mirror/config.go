package mirror

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// PinConfig is the pin settings that the mirror, replay and backfill share.
type PinConfig struct {
	KuboAPI     string
	Concurrency int
	PinTimeout  time.Duration
	PinStall    time.Duration
	PinHedge    time.Duration
	MaxAttempts int
	Backoff     Backoff
	Verify      bool
	// CacheDir, if set, is the mirror's own binary cache: the narinfo of
	// every path pinned is kept there (see package mirrorcache).
	CacheDir string
	Store    config.Store
}

// DefaultConcurrency is --concurrency's default. A small NAR's pin takes
// 50-100 ms on loopback, mostly round trips (pin ls, bitswap from the
// publisher, the pinned event), so a mirror pins at most Concurrency of
// them per pin time: 8 at once kept up with about 150 small paths a
// second, less than one publisher sends, and paths queued for a free slot
// (docs/BENCHMARKS.md, "Mirror latency"). 16 leave them no queue there.
const DefaultConcurrency = 16

// Register adds the pin flags. node says whose kubo --kubo-api names.
func (c *PinConfig) Register(s *config.Set, node string) {
	s.StringVar(&c.KuboAPI, "kubo-api", "", "kubo RPC API of "+node+": http URL, host:port or multiaddr (default: $IPFS_PATH/api, else ~/.ipfs/api)")
	s.IntVar(&c.Concurrency, "concurrency", DefaultConcurrency, "CIDs pinned at once (a small NAR's pin is mostly waiting on round trips, so enough at once keep up with a publisher's burst of small paths)")
	s.DurationVar(&c.PinTimeout, "pin-timeout", DefaultPinTimeout,
		"give up one attempt to pin a CID after this long (raise it for huge NARs over slow links; blocks fetched so far are kept for the next attempt)")
	s.DurationVar(&c.PinStall, "pin-stall", DefaultPinStall,
		"ask kubo again for a pin that fetched no block for this long (bitswap can leave a want unanswered until --pin-timeout although a connected peer holds the block; blocks fetched so far are kept); raise it for links under 20 KB/s; negative: never")
	s.DurationVar(&c.PinHedge, "pin-hedge", DefaultPinHedge,
		"ask kubo a second time, beside the first request, for a pin that fetched no block for this long, at most half --pin-stall (bitswap can leave a pin waiting for blocks the node already received, which a second request finds at once, while blocks still arriving are not fetched twice); negative: never")
	s.IntVar(&c.MaxAttempts, "max-attempts", 10,
		"attempts per CID before giving up on it (the mirror then dead-letters its event); an unreachable kubo is retried without limit by the mirror")
	c.Backoff = Backoff(events.DefaultBackoff)
	s.Var(&c.Backoff, "backoff", "delays before each retry, comma-separated (e.g. 1s,5s,30s); the last one repeats")
	s.StringVar(&c.CacheDir, "cache-dir", "", "keep the narinfo of every path pinned in this directory, rebuilt byte for byte from the published event: a binary cache that `mirror --listen` serves, with NARs from this kubo, when the origin is gone (empty: pin only)")
	c.Store.Register(s)
	s.BoolVar(&c.Verify, "verify", false, "read every pinned NAR back and check its SHA-256 and size against the signed NarHash and NarSize; a mismatch is unpinned and dead-lettered")
}

// Validate checks the pin settings.
func (c *PinConfig) Validate() error {
	if c.Concurrency < 1 {
		return fmt.Errorf("--concurrency %d: must be at least 1", c.Concurrency)
	}
	if c.PinTimeout <= 0 {
		return fmt.Errorf("--pin-timeout %v: must be positive", c.PinTimeout)
	}
	if c.MaxAttempts < 1 {
		return fmt.Errorf("--max-attempts %d: must be at least 1", c.MaxAttempts)
	}
	if len(c.Backoff) == 0 {
		return fmt.Errorf("--backoff: at least one delay")
	}
	if c.CacheDir != "" {
		if c.Store.Dir == "" {
			c.Store.Dir = storepath.DefaultStoreDir
		}
		if err := c.Store.Validate(); err != nil {
			return fmt.Errorf("--store-dir: %w", err)
		}
	}
	return nil
}

// Backoff is a list of retry delays as a flag: "1s,2s,5s".
type Backoff []time.Duration

func (b *Backoff) String() string {
	if b == nil {
		return ""
	}
	parts := make([]string, len(*b))
	for i, d := range *b {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

// Set parses a comma-separated list of durations.
func (b *Backoff) Set(s string) error {
	var out Backoff
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil {
			return err
		}
		if d <= 0 {
			return fmt.Errorf("delay %v: must be positive", d)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return fmt.Errorf("no delays in %q", s)
	}
	*b = out
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateName checks a mirror name: it goes into a subject, a durable
// consumer's name and a file name.
func ValidateName(flag, name string) error {
	if name == "" {
		return fmt.Errorf("%s is required: the mirror's name (letters, digits, '-' and '_')", flag)
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s %q: use 1 to 64 letters, digits, '-' and '_'", flag, name)
	}
	return nil
}

// AnnounceUsage is the help of --announce-addr.
const AnnounceUsage = "a multiaddr clients should dial this mirror's kubo on, without /p2p/ (e.g. /dns4/b.example.org/tcp/4001): its public address, sent in pinned events and listed in the cache's mirror list (docs/OPERATIONS.md); default: the addresses the node reports"

// ValidateAnnounce checks --announce-addr values: multiaddrs without a
// /p2p/ part (the node's ID is added by whoever dials), at most 64.
func ValidateAnnounce(addrs []string) error {
	if len(addrs) > 64 {
		return fmt.Errorf("--announce-addr: %d addresses, at most 64", len(addrs))
	}
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return fmt.Errorf("--announce-addr %q: %v", a, err)
		}
		if _, err := m.ValueForProtocol(ma.P_P2P); err == nil {
			return fmt.Errorf("--announce-addr %q: leave out /p2p/<peer ID>; the node's own ID is added", a)
		}
	}
	return nil
}

// Durable is the durable consumer of the mirror called name.
func Durable(name string) string { return "mirror-" + name }

// OpenCache opens the mirror's own cache, or returns nil without
// --cache-dir.
func (c *PinConfig) OpenCache() (*mirrorcache.Cache, error) {
	if c.CacheDir == "" {
		return nil, nil
	}
	return mirrorcache.Open(c.CacheDir, c.Store.Dir)
}
