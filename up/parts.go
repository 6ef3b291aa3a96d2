package up

import (
	"context"
	"net/http"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/publisher"
	"github.com/nix-ipfs/nix-ipfs/substituter"
)

// startMirror runs a mirror that pins onto --mirror-kubo-api.
func startMirror(ctx context.Context, c Config, log *zap.Logger, runPart func(string, func(context.Context) error), stops *[]func()) error {
	mc := mirror.Config{
		NATS:    c.Publisher.NATS,
		Name:    c.MirrorName,
		AckWait: time.Minute,
		Pin: mirror.PinConfig{
			KuboAPI:     c.MirrorKuboAPI,
			Concurrency: 8,
			PinTimeout:  mirror.DefaultPinTimeout,
			MaxAttempts: 10,
			Backoff:     mirror.Backoff(events.DefaultBackoff),
		},
	}
	mw, err := mirror.Open(ctx, mc, log.Named("mirror"))
	if err != nil {
		return err
	}
	*stops = append(*stops, mw.Close)
	log.Info("mirror", zap.String("name", c.MirrorName), zap.String("kubo", c.MirrorKuboAPI))
	runPart("mirror", mw.Run)
	return nil
}

// newSubstituter serves NARs from up's kubo, narinfos from its cache dir.
// It trusts the cache's own key for IPFSSig, so the CIDs this publisher
// signed stream on their first fetch.
func newSubstituter(c Config, api string, log *zap.Logger) (http.Handler, error) {
	k, err := ipfs.Dial(api)
	if err != nil {
		return nil, err
	}
	sk, err := publisher.LoadSecretKey(c.Publisher.SecretKeyFile)
	if err != nil {
		return nil, err
	}
	return substituter.New(substituter.Options{
		Upstream:    "file://" + c.Publisher.CacheDir,
		IPFS:        k,
		Log:         log.Named("substituter"),
		Registerer:  prometheus.DefaultRegisterer,
		IPFSTimeout: c.SubstituterIPFSTimeout,
		TrustedKeys: []signature.PublicKey{sk.ToPublicKey()},
	})
}
