package substituter

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/peering"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/upstream"
)

// DefaultListen is where the substituter listens unless told otherwise:
// loopback, because a substituter is normally the local Nix's.
const DefaultListen = "127.0.0.1:8380"

// BlocksOff, as --kubo-blocks, reads every NAR through the daemon.
const BlocksOff = "off"

// Config is the substituter command's settings.
type Config struct {
	Log             config.Log
	Upstreams       config.Strings
	UpstreamOrder   string
	FailoverTimeout time.Duration
	Listen          string
	KuboAPI         string
	KuboGateway     string
	KuboBlocks      string
	Gateway         string
	GatewayBlocks   bool
	NarinfoTTL      time.Duration
	NegativeTTL     time.Duration
	IPFSTimeout     time.Duration
	UpstreamTimeout time.Duration
	SpoolDir        string
	MaxSpoolBytes   int64
	Prefetch        int
	PrefetchBytes   int64
	PrefetchTTL     time.Duration
	VerifiedCIDs    int
	TrustedKeys     string
	KeepBytes       int64
	KeepTTL         time.Duration
	BlockFetch      int
	BlockFetchStall time.Duration
	Mirrors         peering.Config
}

// Register adds the substituter's flags.
func (c *Config) Register(s *config.Set) {
	c.Log.Register(s, "json")
	s.StringsVar(&c.Upstreams, "upstream", "the binary cache to serve narinfos from and fall back to for NARs: http(s)://... or file:///dir (required). Several fail over between the origin and its mirrors (the same cache, signed by the same key): the first given is asked first")
	s.StringVar(&c.UpstreamOrder, "upstream-order", upstream.OrderPriority, "which live upstream is asked first: priority (the order given) or latency (the fastest lately)")
	s.DurationVar(&c.FailoverTimeout, "failover-timeout", upstream.DefaultFailoverTimeout, "with several upstreams: give one this long to connect and answer before asking the next, and leave it out (probed in the background) until it answers again")
	s.StringVar(&c.Listen, "listen", DefaultListen, "address to serve the cache on (host:port; port 0 picks one, logged at start)")
	s.StringVar(&c.KuboAPI, "kubo-api", "", "read NARs through this kubo daemon's RPC API: http URL or multiaddr (default, unless --gateway: $IPFS_PATH/api, else ~/.ipfs/api)")
	s.StringVar(&c.KuboGateway, "kubo-gateway", "", "read NAR bytes through this HTTP gateway of the --kubo-api daemon (http URL, host:port or multiaddr; off: RPC cat only). Default: the address in the daemon's $IPFS_PATH/gateway, else its Addresses.Gateway; RPC cat, with the reason logged, when there is none, it does not answer, or the daemon's Gateway.NoFetch is set (it would not fetch missing blocks from peers). Same daemon, same trust as RPC cat, about half its CPU")
	s.StringVar(&c.KuboBlocks, "kubo-blocks", "", "read NAR bytes straight from the block store of the --kubo-api daemon's repository when it is on this machine, flatfs (kubo's default) and readable, with the daemon reading whatever the store lacks: a kubo repository directory, or off (only through the daemon). Default: the repository whose api file names the daemon ($IPFS_PATH), used if it can be read; why not is logged once. The bytes are checked against NarHash as always; it saves the daemon's CPU (1.2-1.8 CPU-s per GiB)")
	s.StringVar(&c.Gateway, "gateway", "", "read NARs from this IPFS HTTP gateway instead of kubo, trustless: one CAR per NAR (or raw blocks), every block checked against its CID (e.g. http://127.0.0.1:8080)")
	s.BoolVar(&c.GatewayBlocks, "gateway-blocks", false, "with --gateway, ask for every block separately instead of one CAR per NAR")
	s.DurationVar(&c.NarinfoTTL, "narinfo-ttl", DefaultNarinfoTTL, "serve narinfos and nix-cache-info from memory this long (negative: do not cache)")
	s.DurationVar(&c.NegativeTTL, "negative-ttl", DefaultNegativeTTL, "remember upstream 404s for narinfos this long (negative: do not cache)")
	s.DurationVar(&c.IPFSTimeout, "ipfs-timeout", DefaultIPFSTimeout, "give up IPFS for a NAR, and use upstream, after this long without receiving a byte")
	s.DurationVar(&c.UpstreamTimeout, "upstream-timeout", DefaultUpstreamTimeout, "bound on upstream response headers, whole narinfos, and pauses in NAR bodies")
	s.StringVar(&c.SpoolDir, "nar-spool-dir", "", "where NARs from IPFS are held while checked, unlinked; created if missing (default: $TMPDIR or /tmp)")
	s.Int64Var(&c.MaxSpoolBytes, "nar-spool-max-bytes", 0, "disk used by NARs being checked at once; a NAR that does not fit goes to upstream, or, if its CID is trusted, streams straight through (0: unbounded)")
	s.IntVar(&c.Prefetch, "prefetch", DefaultPrefetchAhead, "NARs read from IPFS and checked ahead of their request, from the moment their narinfo is served (0: none)")
	s.Int64Var(&c.PrefetchBytes, "prefetch-max-bytes", DefaultPrefetchBytes, "total size of the NARs read ahead at once (one NAR is always allowed)")
	s.DurationVar(&c.PrefetchTTL, "prefetch-ttl", DefaultPrefetchTTL, "drop a NAR read ahead if its request has not come after this long")
	s.IntVar(&c.VerifiedCIDs, "verified-cids", DefaultMaxVerified, "remember this many CIDs proved to hold their NAR; those stream to Nix as they are read from IPFS, rather than once checked whole (0: none)")
	s.StringVar(&c.TrustedKeys, "trusted-public-keys", "", "publishers' keys, as in nix.conf: space-separated name:base64; a narinfo whose IPFSSig verifies under one streams its CID on the first fetch (still hashed, the last bytes held back until it matches) instead of reading and checking it whole first")
	s.Int64Var(&c.KeepBytes, "nar-keep-bytes", DefaultKeepBytes, "NARs kept, verified, in the spool after their last request, at most this many bytes in all (oldest dropped first; the last one is kept whatever its size): the next request for one is sent from the file, with no read from IPFS (0: none)")
	s.DurationVar(&c.KeepTTL, "nar-keep-ttl", DefaultKeepTTL, "how long a NAR is kept in the spool after its last request")
	s.IntVar(&c.BlockFetch, "block-fetch-parallel", DefaultBlockFetchParallel, "with kubo: before a NAR is read, have the daemon fetch its blocks in a random order, so that clients on one network fetching the same closure ask the mirror for different blocks and take the rest from each other (docs/OPERATIONS.md, \"A fleet on one network\"): by a client alone (no other client of its LAN connected) that reads the daemon's block store (--kubo-blocks), as one list a NAR, through one bitswap session; otherwise this many blocks at once over all NARs being read; 0: none, the NAR's blocks are fetched in order as it is read. A NAR whose blocks are all in the daemon's store costs one check per block")
	s.DurationVar(&c.BlockFetchStall, "block-fetch-stall", DefaultBlockFetchStall, "ask again for a block outstanding this long while later ones arrived (or none did), and make a NAR's list again when its next block has not come for this long (0: the default): bitswap can leave a request unanswered until its next rebroadcast, a minute later")
	c.Mirrors.Register(s)
}

// Validate checks the settings that need no network.
func (c *Config) Validate() error {
	if len(c.Upstreams) == 0 {
		return errors.New("--upstream is required")
	}
	if c.UpstreamOrder != upstream.OrderPriority && c.UpstreamOrder != upstream.OrderLatency {
		return fmt.Errorf("--upstream-order %q: want %s or %s", c.UpstreamOrder, upstream.OrderPriority, upstream.OrderLatency)
	}
	if c.FailoverTimeout <= 0 {
		return errors.New("--failover-timeout must be positive")
	}
	if c.Gateway != "" && (c.KuboAPI != "" || c.KuboGateway != "" || c.KuboBlocks != "") {
		return errors.New("--kubo-api/--kubo-gateway/--kubo-blocks and --gateway exclude each other: NARs come from one of them")
	}
	if c.Listen == "" {
		return errors.New("--listen is empty")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: %v", c.Listen, err)
	}
	if c.IPFSTimeout <= 0 || c.UpstreamTimeout <= 0 {
		return errors.New("--ipfs-timeout and --upstream-timeout must be positive")
	}
	if c.MaxSpoolBytes < 0 {
		return errors.New("--nar-spool-max-bytes must not be negative")
	}
	if c.BlockFetch < 0 || c.BlockFetchStall < 0 {
		return errors.New("--block-fetch-parallel and --block-fetch-stall must not be negative")
	}
	if c.Prefetch < 0 || c.PrefetchBytes < 0 || c.PrefetchTTL < 0 || c.VerifiedCIDs < 0 || c.KeepBytes < 0 || c.KeepTTL < 0 {
		return errors.New("--prefetch, --prefetch-max-bytes, --prefetch-ttl, --verified-cids, --nar-keep-bytes and --nar-keep-ttl must not be negative")
	}
	if _, err := ipfs.NewReader(nil, c.KuboGateway, nil); err != nil {
		return fmt.Errorf("--kubo-gateway: %w", err)
	}
	if b := strings.TrimSpace(c.KuboBlocks); b != "" && b != BlocksOff {
		// A repository named by hand must be readable now; the one found
		// by default is tried at the first read, and why not logged.
		if _, err := unixfs.OpenFlatFS(b); err != nil {
			return fmt.Errorf("--kubo-blocks: %w (off: read through the daemon only)", err)
		}
	}
	if _, err := ParseTrustedKeys(c.TrustedKeys); err != nil {
		return err
	}
	if err := c.Mirrors.Validate(c.Gateway != ""); err != nil {
		return err
	}
	for _, raw := range c.Upstreams {
		if err := upstream.Check(raw); err != nil {
			return err
		}
	}
	if c.Gateway != "" {
		if _, err := unixfs.NewGateway(c.Gateway, &http.Client{}); err != nil {
			return err
		}
	}
	return nil
}

// Options turns the settings into Options: it dials kubo (without
// contacting it) or sets up the gateway client.
func (c *Config) Options(log *zap.Logger, reg prometheus.Registerer) (Options, error) {
	o := Options{
		Upstreams:       c.Upstreams,
		UpstreamOrder:   c.UpstreamOrder,
		FailoverTimeout: c.FailoverTimeout,
		Log:             log,
		Registerer:      reg,
		NarinfoTTL:      c.NarinfoTTL,
		NegativeTTL:     c.NegativeTTL,
		IPFSTimeout:     c.IPFSTimeout,
		UpstreamTimeout: c.UpstreamTimeout,
		SpoolDir:        c.SpoolDir,
		MaxSpoolBytes:   c.MaxSpoolBytes,
		// Options reads zero as the default; the flag's zero is "none".
		PrefetchAhead:    orNone(c.Prefetch),
		PrefetchMaxBytes: c.PrefetchBytes,
		PrefetchTTL:      c.PrefetchTTL,
		MaxVerified:      orNone(c.VerifiedCIDs),
		KeepBytes:        orNone(c.KeepBytes),
		KeepTTL:          c.KeepTTL,
		// The flag's zero is "none", as for the others.
		BlockFetchParallel: orNone(c.BlockFetch),
		BlockFetchStall:    c.BlockFetchStall,
	}
	keys, err := ParseTrustedKeys(c.TrustedKeys)
	if err != nil {
		return o, err
	}
	o.TrustedKeys = keys
	if c.Gateway != "" {
		g, err := unixfs.NewGateway(c.Gateway, nil)
		if err != nil {
			return o, err
		}
		g.Blocks = c.GatewayBlocks
		if log != nil {
			g.SetLogger(log)
		}
		o.IPFS = g
		return o, nil
	}
	k, err := ipfs.Dial(c.KuboAPI)
	if err != nil {
		return o, err
	}
	rd, err := ipfs.NewReader(k, c.KuboGateway, log)
	if err != nil {
		return o, err
	}
	if b := strings.TrimSpace(c.KuboBlocks); b != BlocksOff {
		rd.UseBlockStore(b)
	}
	o.IPFS = rd
	o.Peering = c.Mirrors.Options(k)
	if c.BlockFetch == 0 {
		// Without the blocks fetched ahead there is no stall to fall back
		// on in time (only --ipfs-timeout): every client keeps the mirrors.
		o.Peering.Seeders = 0
	}
	return o, nil
}

// ParseTrustedKeys is narinfo.ParsePublicKeys, under the name of the flag
// it reads.
func ParseTrustedKeys(s string) ([]signature.PublicKey, error) { return narinfo.ParsePublicKeys(s) }

func orNone[T int | int64](n T) T {
	if n == 0 {
		return -1
	}
	return n
}

// Source describes where NARs come from, for the start-up log line.
func (c *Config) Source() zap.Field {
	if c.Gateway != "" {
		return zap.String("gateway", c.Gateway)
	}
	return zap.Dict("kubo", zap.String("api", c.KuboAPI), zap.String("gateway", c.KuboGateway), zap.String("blocks", c.KuboBlocks))
}
