package publisher

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// MirrorListPath is where the cache's mirror list lives.
func (c Cache) MirrorListPath() string { return filepath.Join(c.Dir, mirrorlist.FileName) }

// WriteMirrorList replaces the cache's mirror list, atomically.
func (c Cache) WriteMirrorList(l *mirrorlist.List) error {
	data, err := l.Marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(c.MirrorListPath(), data, 0o644); err != nil {
		return fmt.Errorf("mirror list: %w", err)
	}
	return nil
}

// mirrorIdle is how long FollowMirrors waits for a pinned event before it
// writes what changed.
const mirrorIdle = time.Second

// FollowMirrors keeps the cache's mirror list (mirrorlist.FileName) from
// the mirrors' "pinned" events until ctx is done. It reads the latest
// event of each mirror (one subject per mirror: the stream's last message
// per subject), writes the list once it has caught up, and rewrites it
// when a mirror appears or its addresses change. Every publisher of a
// cache may run it: all read the same events and write the same list.
// Failures are logged and retried; it returns only when ctx is done.
func FollowMirrors(ctx context.Context, js jetstream.JetStream, stream string, cache Cache, log *zap.Logger) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := followMirrors(ctx, js, stream, cache, log)
		if ctx.Err() != nil {
			return
		}
		log.Warn("mirror list: reading pinned events failed; retrying", zap.Duration("in", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

func followMirrors(ctx context.Context, js jetstream.JetStream, stream string, cache Cache, log *zap.Logger) error {
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectPinnedPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return err
	}
	it, err := c.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return err
	}
	defer it.Stop()
	set := mirrorlist.NewSet()
	caughtUp, dirty := false, false
	write := func() {
		l := set.List(time.Now())
		if err := cache.WriteMirrorList(l); err != nil {
			log.Error("mirror list not written", zap.String("file", cache.MirrorListPath()), zap.Error(err))
			return // kept dirty: tried again at the next idle moment
		}
		dirty = false
		log.Info("mirror list written", zap.String("file", cache.MirrorListPath()), zap.Int("mirrors", len(l.Mirrors)))
	}
	for {
		nctx, cancel := context.WithTimeout(ctx, mirrorIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				if !caughtUp || dirty {
					caughtUp = true
					write()
				}
				continue
			}
			return err
		}
		if p := pinnedOf(m, log); p != nil && set.Add(p) {
			dirty = true
			log.Info("mirror seen", zap.String("mirror", p.Mirror), zap.String("peer_id", p.Node.PeerID),
				zap.Strings("announce_addrs", p.AnnounceAddrs))
		}
		if meta, err := m.Metadata(); err == nil && meta.NumPending == 0 && (dirty || !caughtUp) {
			caughtUp = true
			write()
		}
	}
}

// pinnedOf returns m's pinned event, or nil (logged) when m is not a
// mirror's valid pinned event on its own subject.
func pinnedOf(m jetstream.Msg, log *zap.Logger) *events.Pinned {
	ev, err := events.Decode(m.Data())
	if err != nil {
		log.Warn("mirror list: ignoring an invalid event", zap.String("subject", m.Subject()), zap.Error(err))
		return nil
	}
	p, ok := ev.(*events.Pinned)
	if !ok || m.Subject() != events.SubjectPinned(p.Mirror) {
		log.Warn("mirror list: ignoring an event that is not a mirror's pinned event", zap.String("subject", m.Subject()),
			zap.String("type", events.Head(ev).Type))
		return nil
	}
	return p
}
