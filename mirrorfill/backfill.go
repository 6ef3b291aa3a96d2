package mirrorfill

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// BackfillConfig is backfill's settings.
type BackfillConfig struct {
	NATS             config.NATS
	Log              config.Log
	Pin              mirror.PinConfig
	Cache            string
	PathsFrom        string
	Mirror           string
	Peers            string
	HTTPTimeout      time.Duration
	Progress         string
	ProgressInterval time.Duration

	peers []ipfs.Node
}

// Register adds backfill's flags.
func (c *BackfillConfig) Register(s *config.Set) {
	c.NATS.Register(s)
	c.Log.Register(s, "console")
	c.Pin.Register(s, "the node to fill")
	s.StringVar(&c.Cache, "cache", "", "the binary cache (required): a directory, a file:// URL, or an http(s):// URL (which needs --paths-from)")
	s.StringVar(&c.PathsFrom, "paths-from", "", "a file of store paths, one per line (e.g. from nix-store -qR): backfill only these; required for an http(s) cache, which cannot be listed")
	s.StringVar(&c.Mirror, "mirror", "", "also announce each pin as mirror NAME with a pinned event (needs NATS); without it, NATS is not used")
	s.StringVar(&c.Peers, "peer", "", "nodes that hold the NARs, dialled before pinning: comma-separated multiaddrs ending in /p2p/<peer id> (narinfos do not say who has a CID)")
	s.DurationVar(&c.HTTPTimeout, "http-timeout", 30*time.Second, "timeout for fetching one narinfo from an http(s) cache")
	s.StringVar(&c.Progress, "progress", ProgressAuto, "progress display on stderr: auto (a bar on a terminal, lines otherwise), bar, lines or none")
	s.DurationVar(&c.ProgressInterval, "progress-interval", 5*time.Second, "how often --progress=lines prints a line")
}

// Validate checks the settings that need no network.
func (c *BackfillConfig) Validate() error {
	if c.Cache == "" {
		return errors.New("--cache is required: a cache directory or URL")
	}
	u, err := url.Parse(c.Cache)
	if err != nil {
		return fmt.Errorf("--cache %q: %w", c.Cache, err)
	}
	switch u.Scheme {
	case "http", "https":
		if c.PathsFrom == "" {
			return fmt.Errorf("--cache %s: an http(s) binary cache has no listing: pass --paths-from FILE with the store paths to backfill", c.Cache)
		}
	case "", "file":
	default:
		return fmt.Errorf("--cache %q: want a directory, file://, http:// or https://", c.Cache)
	}
	if c.Mirror != "" {
		if err := mirror.ValidateName("--mirror", c.Mirror); err != nil {
			return err
		}
	}
	c.peers, err = parsePeers(c.Peers)
	if err != nil {
		return fmt.Errorf("--peer: %w", err)
	}
	if _, err := NewProgress(c.Progress, io.Discard, "", 0); err != nil {
		return err
	}
	return c.Pin.Validate()
}

// parsePeers reads comma-separated multiaddrs that end in /p2p/<peer id>.
func parsePeers(s string) ([]ipfs.Node, error) {
	var out []ipfs.Node
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		i := strings.LastIndex(f, "/p2p/")
		if i < 0 {
			return nil, fmt.Errorf("%q: does not end in /p2p/<peer id>", f)
		}
		id := f[i+len("/p2p/"):]
		if id == "" || strings.Contains(id, "/") {
			return nil, fmt.Errorf("%q: does not end in /p2p/<peer id>", f)
		}
		n := ipfs.Node{PeerID: id}
		if addr := f[:i]; addr != "" {
			if _, err := ma.NewMultiaddr(addr); err != nil {
				return nil, fmt.Errorf("%q: %w", f, err)
			}
			n.Addrs = []string{addr}
		}
		out = append(out, n)
	}
	return out, nil
}

// narinfoSource reads a binary cache's narinfos from a directory or over
// HTTP.
type narinfoSource struct {
	dir    string
	base   string // http(s) URL without a trailing slash
	client *http.Client
}

func openSource(cache string, timeout time.Duration) (*narinfoSource, error) {
	u, err := url.Parse(cache)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "cache %q: %w", cache, err)
	}
	switch u.Scheme {
	case "http", "https":
		return &narinfoSource{base: strings.TrimRight(cache, "/"), client: &http.Client{Timeout: timeout}}, nil
	case "file":
		return &narinfoSource{dir: u.Path}, nil
	}
	return &narinfoSource{dir: cache}, nil
}

func (s *narinfoSource) String() string {
	if s.dir != "" {
		return s.dir
	}
	return s.base
}

// list returns the hash parts of every narinfo in a directory cache.
func (s *narinfoSource) list() ([]string, error) {
	if s.dir == "" {
		return nil, errs.Errorf(errs.Invalid, "cache %s: an http(s) cache cannot be listed; pass --paths-from", s.base)
	}
	if fi, err := os.Stat(s.dir); err != nil {
		return nil, errs.Errorf(errs.Invalid, "cache %w", err)
	} else if !fi.IsDir() {
		return nil, errs.Errorf(errs.Invalid, "cache %s: not a directory", s.dir)
	}
	names, err := cachedir.Cache{Dir: s.dir}.NarInfoFiles()
	if err != nil {
		return nil, errs.E(errs.Transient, err)
	}
	var out []string
	for _, n := range names {
		h := cachedir.HashPartOf(n)
		if storepath.ValidateHashPart(h) == nil {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out, nil
}

// read returns the narinfo of hashPart, or nil when the cache has none.
func (s *narinfoSource) read(ctx context.Context, hashPart string) (*narinfo.NarInfo, error) {
	if s.dir != "" {
		b, err := cachedir.Cache{Dir: s.dir}.ReadNarInfoBytes(hashPart)
		if err != nil {
			return nil, err
		}
		if b == nil {
			return nil, nil
		}
		ni, err := narinfo.Parse(bytes.NewReader(b))
		if err != nil {
			return nil, errs.Errorf(errs.Invalid, "%s: %w", cachedir.Cache{Dir: s.dir}.NarInfoPath(hashPart), err)
		}
		return ni, nil
	}
	u := s.base + "/" + cachedir.NarInfoName(hashPart)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("GET %s: %w", u, err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden:
		// S3-backed caches answer 403 for a missing key.
		return nil, nil
	case resp.StatusCode != http.StatusOK:
		return nil, errs.Errorf(errs.Transient, "GET %s: %s", u, resp.Status)
	}
	ni, err := narinfo.Parse(resp.Body)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "%s: %w", u, err)
	}
	return ni, nil
}

// readPaths reads store paths, one per line ('#' comments and blank lines
// skipped), and returns their hash parts. A line may be an absolute store
// path, a basename, or a bare hash part.
func readPaths(r io.Reader) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		base := path.Base(line)
		var h string
		if len(base) == storepath.HashLen {
			if err := storepath.ValidateHashPart(base); err != nil {
				return nil, fmt.Errorf("line %d: %q: %w", n, line, err)
			}
			h = base
		} else {
			if err := storepath.ValidateBase(base); err != nil {
				return nil, fmt.Errorf("line %d: %q: not a store path: %w", n, line, err)
			}
			h = storepath.HashPart(base)
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out, sc.Err()
}

// BackfillOptions say what Backfill pins.
type BackfillOptions struct {
	// HashParts to backfill; nil means every narinfo of a directory cache.
	HashParts []string
	// Peers are dialled before each pin (see mirror.PinnerOptions).
	Peers    []ipfs.Node
	Pin      mirror.PinConfig
	Progress Progress
	Logger   *zap.Logger
}

// Backfill pins the IPFSHash of every narinfo of the cache at src (a
// directory, file:// or http(s) URL) with p, concurrently. Narinfos without
// an IPFSHash, and listed paths the cache does not have, are skipped.
func Backfill(ctx context.Context, src string, p *mirror.Pinner, o BackfillOptions, httpTimeout time.Duration) (Tally, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Progress == nil {
		o.Progress = noProgress{}
	}
	s, err := openSource(src, httpTimeout)
	if err != nil {
		return Tally{}, err
	}
	hashes := o.HashParts
	if hashes == nil {
		if hashes, err = s.list(); err != nil {
			return Tally{}, err
		}
	}
	b := newBatch(p, o.Pin, o.Progress, o.Logger)
	o.Progress.Start(int64(len(hashes)))
	for _, h := range hashes {
		log := o.Logger.With(zap.String("hash_part", h))
		ok := b.goDo(ctx, func(ctx context.Context) (Outcome, bool) {
			return b.try(ctx, log, func(ctx context.Context) (Outcome, error) {
				ni, err := s.read(ctx, h)
				if err != nil {
					return OutFailed, err
				}
				if ni == nil {
					log.Warn("not in the cache; skipped")
					return OutSkipped, nil
				}
				if storepath.HashPart(ni.StorePath) != h {
					return OutFailed, errs.Errorf(errs.Invalid, "%s.narinfo is for %s", h, ni.StorePath)
				}
				if ni.IPFSHash == "" {
					log.Debug("no IPFSHash; skipped", zap.String("store_path", ni.StorePath))
					return OutSkipped, nil
				}
				it, err := mirror.FromNarInfo(ni)
				if err != nil {
					return OutFailed, err
				}
				it.Providers = o.Peers
				return b.pinOnce(ctx, it)
			})
		}, nil)
		if !ok {
			break
		}
	}
	t := b.wait()
	o.Progress.Finish()
	switch {
	case ctx.Err() != nil:
		return t, fmt.Errorf("interrupted after %d of %d narinfos (%s); a new run skips what is pinned", t.Done(), len(hashes), t)
	case t.Failed > 0:
		return t, fmt.Errorf("%d of %d CIDs could not be pinned (see the log)", t.Failed, len(hashes))
	}
	return t, nil
}

// RunBackfill runs a backfill as the CLI does.
func RunBackfill(ctx context.Context, cfg BackfillConfig, log *zap.Logger, out, progressOut io.Writer) error {
	kubo, err := dialKubo(ctx, cfg.Pin.KuboAPI)
	if err != nil {
		return err
	}
	o := BackfillOptions{Peers: cfg.peers, Pin: cfg.Pin, Logger: log}
	if cfg.PathsFrom != "" {
		f, err := os.Open(cfg.PathsFrom)
		if err != nil {
			return errs.Errorf(errs.Invalid, "--paths-from: %w", err)
		}
		o.HashParts, err = readPaths(f)
		f.Close()
		if err != nil {
			return errs.Errorf(errs.Invalid, "--paths-from %s: %w", cfg.PathsFrom, err)
		}
		if o.HashParts == nil {
			o.HashParts = []string{}
		}
	}
	cache, err := cfg.Pin.OpenCache()
	if err != nil {
		return err
	}
	popt := mirror.PinnerOptions{Verify: cfg.Pin.Verify, PinTimeout: cfg.Pin.PinTimeout, PinStall: cfg.Pin.PinStall, PinHedge: cfg.Pin.PinHedge, Logger: log, OnPin: mirror.RecordPin, QuietPins: true, Cache: cache}
	if cfg.Mirror != "" {
		nc, js, err := cfg.NATS.ConnectOnce("nix-ipfs backfill " + cfg.Mirror)
		if err != nil {
			return err
		}
		defer nc.Close()
		if _, err := js.Stream(ctx, cfg.NATS.Stream); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return errs.Errorf(errs.Invalid, "--mirror: stream %s does not exist on this NATS, so pinned events cannot be stored", cfg.NATS.Stream)
			}
			return errs.E(errs.Transient, fmt.Errorf("stream %s: %w", cfg.NATS.Stream, err))
		}
		popt.Mirror, popt.JS = cfg.Mirror, js
		popt.Logger = log.With(zap.String("mirror", cfg.Mirror))
	}
	label := "backfill"
	if cfg.Mirror != "" {
		label += " " + cfg.Mirror
	}
	progress, err := NewProgress(cfg.Progress, progressOut, label, cfg.ProgressInterval)
	if err != nil {
		return err
	}
	o.Progress = progress
	t, err := Backfill(ctx, cfg.Cache, mirror.NewPinner(kubo, popt), o, cfg.HTTPTimeout)
	fmt.Fprintf(out, "%s from %s: %d narinfos: %s\n", label, cfg.Cache, t.Done(), t)
	return err
}
