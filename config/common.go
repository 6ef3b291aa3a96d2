package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// DefaultNATSURL is where every component looks for NATS by default.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// NATS holds the settings to reach NATS and the stream.
type NATS struct {
	URL      string
	Creds    string
	NKey     string
	User     string
	Password string
	Token    string
	TLSCA    string
	TLSCert  string
	TLSKey   string

	Stream         string
	StreamMaxAge   time.Duration
	StreamMaxBytes int64
	StreamReplicas int

	set *Set
}

// Register adds the NATS flags to s.
func (n *NATS) Register(s *Set) {
	n.set = s
	s.StringVar(&n.URL, "nats-url", DefaultNATSURL, "NATS server URL(s), comma-separated")
	s.StringVar(&n.Creds, "nats-creds", "", "NATS credentials file (JWT + NKey seed)")
	s.StringVar(&n.NKey, "nats-nkey", "", "file holding an NKey seed to authenticate with")
	s.StringVar(&n.User, "nats-user", "", "NATS user name")
	s.StringVar(&n.Password, "nats-password", "", "NATS password (prefer the environment or the config file to a flag)")
	s.StringVar(&n.Token, "nats-token", "", "NATS authentication token (prefer the environment or the config file)")
	s.StringVar(&n.TLSCA, "nats-tls-ca", "", "CA certificate file to verify the NATS server")
	s.StringVar(&n.TLSCert, "nats-tls-cert", "", "client certificate file for mutual TLS")
	s.StringVar(&n.TLSKey, "nats-tls-key", "", "client key file for mutual TLS")
	s.StringVar(&n.Stream, "stream", events.DefaultStream, "JetStream stream name")
	s.DurationVar(&n.StreamMaxAge, "stream-max-age", 0, "drop events older than this (0 keeps the whole history, so it can be replayed)")
	s.Int64Var(&n.StreamMaxBytes, "stream-max-bytes", 0, "bound the stream's size in bytes (0: unlimited)")
	s.IntVar(&n.StreamReplicas, "stream-replicas", 1, "stream replicas on a NATS cluster")
}

// StreamOptions returns the stream settings.
// The stream's limits are applied to an existing stream only when this
// component was given them explicitly, so a worker started with defaults
// never undoes an operator's retention settings.
func (n *NATS) StreamOptions() events.StreamOptions {
	o := events.StreamOptions{Name: n.Stream, MaxAge: n.StreamMaxAge, MaxBytes: n.StreamMaxBytes, Replicas: n.StreamReplicas}
	if n.set != nil {
		for _, f := range []string{"stream-max-age", "stream-max-bytes", "stream-replicas"} {
			if src := n.set.Sources[f]; src != "" && src != "default" {
				o.Update = true
			}
		}
	}
	return o
}

// Options returns nats.go options for the settings. name identifies the
// client to the server (it shows in connz).
func (n *NATS) Options(name string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name)}
	if n.Creds != "" {
		opts = append(opts, nats.UserCredentials(n.Creds))
	}
	if n.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", n.NKey, err)
		}
		opts = append(opts, o)
	}
	if n.User != "" {
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	}
	if n.Token != "" {
		opts = append(opts, nats.Token(n.Token))
	}
	if n.TLSCA != "" || n.TLSCert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if n.TLSCA != "" {
			pem, err := os.ReadFile(n.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("--nats-tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--nats-tls-ca %s: no PEM certificates", n.TLSCA)
			}
			tc.RootCAs = pool
		}
		if n.TLSCert != "" || n.TLSKey != "" {
			if n.TLSCert == "" || n.TLSKey == "" {
				return nil, errors.New("--nats-tls-cert and --nats-tls-key go together")
			}
			cert, err := tls.LoadX509KeyPair(n.TLSCert, n.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("--nats-tls-cert/--nats-tls-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// Connect connects to NATS for a long-running worker: it retries the first
// connection and reconnects forever, so a worker started before NATS, or
// living through a NATS restart, carries on.
func (n *NATS) Connect(name string, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := n.Options(name)
	if err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	opts = append(opts,
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", zap.String("url", c.ConnectedUrlRedacted())) }),
	)
	opts = append(opts, extra...)
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("connect to NATS at %s: %w", n.URL, err))
	}
	return nc, nil
}

// ConnectOnce connects for a command that runs once (prune, pin, replay,
// backfill, gc): it fails at once when NATS is down, instead of waiting
// for it like a worker.
func (n *NATS) ConnectOnce(name string) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := n.Options(name)
	if err != nil {
		return nil, nil, errs.E(errs.Invalid, err)
	}
	opts = append(opts, nats.Timeout(10*time.Second))
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		return nil, nil, errs.E(errs.Transient, fmt.Errorf("connect to NATS at %s: %w", n.URL, err))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// JetStream connects like Connect and makes sure the stream exists: what
// every worker does before its first event.
func (n *NATS) JetStream(ctx context.Context, name string, log *zap.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := n.Connect(name, log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = events.EnsureStream(ctx, js, n.StreamOptions())
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// Log holds the logging settings.
type Log struct {
	Level  string
	Format string
}

// Register adds --log-level and --log-format; format defaults to json for
// daemons and console for commands a person runs.
func (l *Log) Register(s *Set, defaultFormat string) {
	s.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn, error")
	s.StringVar(&l.Format, "log-format", defaultFormat, "log format: json or console")
}

// Logger builds the zap logger.
func (l *Log) Logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(l.Level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", l.Level, err)
	}
	var cfg zap.Config
	switch l.Format {
	case "json":
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	default:
		return nil, fmt.Errorf("--log-format %q: want json or console", l.Format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil
	return cfg.Build()
}

// Store holds the local Nix store settings.
type Store struct {
	Dir string
}

// Register adds --store-dir.
func (st *Store) Register(s *Set) {
	def := storepath.DefaultStoreDir
	if v := os.Getenv("NIX_STORE_DIR"); v != "" {
		def = v
	}
	s.StringVar(&st.Dir, "store-dir", def, "the Nix store directory (default: $NIX_STORE_DIR or /nix/store)")
}

// Validate checks the store directory.
func (st *Store) Validate() error {
	st.Dir = strings.TrimRight(st.Dir, "/")
	return storepath.ValidateStoreDir(st.Dir)
}
