// Package up is `nix-ipfs up`: the whole of host A on one machine, for
// trying nix-ipfs and for small single-host deployments. It starts an
// embedded NATS JetStream server (file store under the data directory)
// unless --nats-url names one, a kubo daemon of its own where none answers,
// the publisher, a mirror when --mirror-kubo-api names a second node, and on
// --listen one HTTP server for the binary cache (at /), the substituter
// (at /substituter/) and the status page (at /status/). SIGINT or SIGTERM stops it cleanly: in-flight work
// finishes or is left for redelivery.
package up

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachehttp"
	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/httpserve"
	"github.com/nix-ipfs/nix-ipfs/internal/kubod"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/publisher"
	"github.com/nix-ipfs/nix-ipfs/status"
	"github.com/nix-ipfs/nix-ipfs/statuspage"
)

// Config is up's settings.
type Config struct {
	DataDir                string
	Listen                 string
	NATSListen             string
	Publisher              publisher.Config
	MirrorName             string
	MirrorKuboAPI          string
	SubstituterIPFSTimeout time.Duration
	KuboProfile            string
}

// Register adds up's flags. The publisher's flags come along, less the
// ones up decides itself.
func (c *Config) Register(s *config.Set) {
	// The publisher's defaults, --ipfs-nocopy off among them: kubo's
	// filestore references only what kubo's own chunkers cut, so zero-copy
	// would give up the reference-aware chunker, and with it upgrades that
	// move only what changed (docs/CHUNKING.md). up's kubo has its
	// filestore enabled and the cache under its data directory, so
	// --ipfs-nocopy works when asked for.
	c.Publisher.Register(s)
	s.StringVar(&c.DataDir, "data-dir", "", "where up keeps NATS's store, its kubo repo and the cache (required)")
	s.StringVar(&c.Listen, "listen", "127.0.0.1:8484", "serve the cache (at /), the substituter (at /substituter/) and the status page (at /status/) here; empty: no HTTP")
	s.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:4222", "the embedded NATS server's client address (used when --nats-url is not set on the command line, env or file)")
	s.StringVar(&c.MirrorName, "mirror-name", "local", "name of the mirror up runs when --mirror-kubo-api is set")
	s.StringVar(&c.MirrorKuboAPI, "mirror-kubo-api", "", "run a mirror that pins every published NAR on this second kubo node")
	s.StringVar(&c.KuboProfile, "kubo-init-profile", "server", "ipfs init profile for the kubo up starts when none answers (\"test\": loopback only)")
	s.DurationVar(&c.SubstituterIPFSTimeout, "substituter-ipfs-timeout", 30*time.Second, "give up on IPFS for a NAR after this long and fall back to the cache")
}

// Validate checks what needs no network.
func (c *Config) Validate(natsURLGiven bool) error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if c.Publisher.CacheDir == "" {
		c.Publisher.CacheDir = filepath.Join(c.DataDir, "cache")
	}
	if !natsURLGiven {
		if _, _, err := net.SplitHostPort(c.NATSListen); err != nil {
			return fmt.Errorf("--nats-listen %q: %v", c.NATSListen, err)
		}
	}
	return c.Publisher.Validate()
}

// Run runs everything until ctx is done.
func Run(ctx context.Context, c Config, natsURLGiven bool, log *zap.Logger) error {
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return err
	}
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()

	if !natsURLGiven {
		ns, url, err := startNATS(filepath.Join(c.DataDir, "nats"), c.NATSListen)
		if err != nil {
			return err
		}
		stops = append(stops, func() { ns.Shutdown(); ns.WaitForShutdown() })
		c.Publisher.NATS.URL = url
		log.Info("embedded NATS JetStream", zap.String("url", url), zap.String("store", filepath.Join(c.DataDir, "nats")))
	}

	api, daemon, err := ensureKubo(ctx, c.Publisher.KuboAPI, filepath.Join(c.DataDir, "ipfs"), c.KuboProfile, log)
	if err != nil {
		return err
	}
	if daemon != nil {
		stops = append(stops, func() { daemon.Stop(30 * time.Second) })
	}
	c.Publisher.KuboAPI = api
	if err := c.decideNocopy(ctx, api, log); err != nil {
		return err
	}

	pw, err := publisher.Open(ctx, c.Publisher, log.Named("publisher"))
	if err != nil {
		return err
	}
	stops = append(stops, pw.Close)

	// The parts run until ctx ends or one of them fails; a failure stops
	// the others, so up exits instead of running on without it.
	ctx, stopParts := context.WithCancel(ctx)
	defer stopParts()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	runPart := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	runPart("publisher", pw.Run)

	if c.MirrorKuboAPI != "" {
		if err := startMirror(ctx, c, log, runPart, &stops); err != nil {
			return err
		}
	} else {
		log.Info("no mirror: give --mirror-kubo-api to pin every NAR on a second node")
	}

	if c.Listen != "" {
		h, err := handler(c, api, pw.JS, log)
		if err != nil {
			return err
		}
		runPart("http", func(ctx context.Context) error {
			return httpserve.ListenAndServe(ctx, c.Listen, h, log, "cache (at /) and substituter (at /substituter)")
		})
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing in-flight work")
	case runErr = <-errc:
		log.Error("stopping", zap.Error(runErr))
		stopParts()
	}
	wg.Wait()
	return runErr
}

// decideNocopy checks that kubo can reference the cache's files when
// --ipfs-nocopy is asked for: its filestore enabled, the cache under its
// filestore root (the parent of its repository) and visible to it at the
// same path. up's own kubo can (its repository is <data-dir>/ipfs),
// unless --cache-dir is outside the data directory; then up refuses to
// start rather than copy behind the operator's back.
func (c *Config) decideNocopy(ctx context.Context, api string, log *zap.Logger) error {
	if !c.Publisher.Nocopy {
		log.Info("NARs added to kubo by copy, cut at store-path references (--chunker); kubo keeps a second copy of every NAR until gc",
			zap.String("chunker", c.Publisher.Chunker))
		return nil
	}
	k, err := ipfs.Dial(api)
	if err != nil {
		return err
	}
	params, err := c.Publisher.Params()
	if err != nil {
		return err
	}
	if err := k.CheckNocopy(ctx, c.Publisher.CacheDir, params); err != nil {
		return fmt.Errorf("--ipfs-nocopy: kubo at %s cannot add files under %s by reference: %w", api, c.Publisher.CacheDir, err)
	}
	log.Info("zero-copy: NARs added to kubo by reference (filestore); the cache's NAR is the only copy, keep it where it is",
		zap.String("cache_dir", c.Publisher.CacheDir))
	return nil
}

func startNATS(storeDir, listen string) (*server.Server, string, error) {
	host, portStr, _ := net.SplitHostPort(listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, "", fmt.Errorf("--nats-listen %q: %v", listen, err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "nix-ipfs-up",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, "", fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, "", fmt.Errorf("embedded NATS on %s did not start (is the port taken? give --nats-listen or --nats-url)", listen)
	}
	return ns, ns.ClientURL(), nil
}

// ensureKubo returns a kubo API that answers: the one given, the one in
// $IPFS_PATH/api, or a daemon of up's own on repo.
func ensureKubo(ctx context.Context, api, repo, profile string, log *zap.Logger) (string, *kubod.Daemon, error) {
	if url, err := ipfs.ResolveAPI(api); err == nil {
		if k, err := ipfs.Dial(url); err == nil {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err = k.Ping(pctx)
			cancel()
			if err == nil {
				log.Info("using kubo", zap.String("api", url))
				return url, nil, nil
			}
			if api != "" {
				return "", nil, fmt.Errorf("kubo at %s (--kubo-api) does not answer: %w", url, err)
			}
		}
	}
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(repo), "ipfs.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", nil, err
	}
	log.Info("no kubo answers: starting one", zap.String("repo", repo), zap.String("log", logf.Name()))
	d, err := kubod.Start(ctx, "", repo, kubod.Options{
		Profile: profile,
		API:     "/ip4/127.0.0.1/tcp/0", Gateway: "/ip4/127.0.0.1/tcp/0",
		Swarm: []string{"/ip4/0.0.0.0/tcp/0", "/ip6/::/tcp/0"}, Log: logf,
		Settings: kubod.Settings(kubod.Origin),
	})
	if err != nil {
		logf.Close()
		return "", nil, err
	}
	return d.API, d, nil
}

func handler(c Config, api string, js jetstream.JetStream, log *zap.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("/", cachehttp.Handler(c.Publisher.CacheDir))
	// The status page, without retention: up runs no prune, so it has no
	// policy to plan with.
	col := status.NewCollector(js, status.CollectorOptions{Stream: c.Publisher.NATS.Stream, LastDead: 10, Log: log.Named("status")})
	mux.Handle("/status/", http.StripPrefix("/status", statuspage.New(col, statuspage.Options{Refresh: 10 * time.Second, Log: log.Named("status")})))
	sub, err := newSubstituter(c, api, log)
	if err != nil {
		return nil, err
	}
	mux.Handle("/substituter/", http.StripPrefix("/substituter", sub))
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	return mux, nil
}
