package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// DefaultStream is the JetStream stream's default name.
const DefaultStream = "NIXIPFS"

// StreamOptions configure the stream. Zero values mean the defaults.
type StreamOptions struct {
	Name string
	// MaxAge drops events older than this; 0 keeps them forever, so the
	// whole history can be replayed to re-mirror a node.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; 0 is unlimited.
	MaxBytes int64
	// Duplicates is the window in which a repeated Nats-Msg-Id is stored
	// once. Handlers are idempotent anyway; the window keeps the stream small
	// when the hook's spool and a flush race.
	Duplicates time.Duration
	// Replicas for a clustered NATS; 1 on a single server.
	Replicas int
	// Update applies these limits to an existing stream. Without it an
	// existing stream is left as it is, so that a component started with
	// default settings does not undo an operator's retention settings.
	Update bool
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Name == "" {
		o.Name = DefaultStream
	}
	if o.Duplicates == 0 {
		o.Duplicates = 2 * time.Hour
	}
	if o.MaxAge > 0 && o.Duplicates > o.MaxAge {
		o.Duplicates = o.MaxAge // the server refuses a longer window
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	return o
}

// Config returns the JetStream stream configuration for o.
func (o StreamOptions) Config() jetstream.StreamConfig {
	o = o.withDefaults()
	maxBytes := o.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        o.Name,
		Description: "nix-ipfs events: built, published, pinned, dead letters",
		Subjects:    []string{SubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.MaxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		MaxMsgSize:  MaxSize,
		Duplicates:  o.Duplicates,
		Replicas:    o.Replicas,
		Discard:     jetstream.DiscardOld,
	}
}

// EnsureStream creates the stream if it is missing, and brings an existing
// one's limits up to date when o.Update is set. Every component calls it at
// start, so whichever starts first creates it.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	cfg := o.Config()
	if !o.Update {
		s, err := js.Stream(ctx, cfg.Name)
		if err == nil {
			info := s.CachedInfo()
			if !slices.Contains(info.Config.Subjects, SubjectPrefix+">") {
				return nil, errs.Errorf(errs.Invalid, "stream %s exists but does not capture %s> (subjects %v)", cfg.Name, SubjectPrefix, info.Config.Subjects)
			}
			return s, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, errs.E(errs.Transient, fmt.Errorf("stream %s: %w", cfg.Name, err))
		}
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("ensure stream %s: %w", cfg.Name, err))
	}
	return s, nil
}

// Publish seals nothing: it encodes e (validating it), publishes it on
// subject with e's id as Nats-Msg-Id, and waits for the stream's ack.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, e Event) (*jetstream.PubAck, error) {
	data, err := Encode(e)
	if err != nil {
		return nil, err
	}
	ack, err := js.Publish(ctx, subject, data, jetstream.WithMsgID(e.header().ID))
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, err
		}
		return nil, errs.E(errs.Transient, fmt.Errorf("publish %s %s: %w", subject, e.header().ID, err))
	}
	return ack, nil
}
