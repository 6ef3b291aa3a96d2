package mirrorlist

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
)

// Path is where the mirror list of the cache in dir lives.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// WriteFile replaces the mirror list of the cache in dir, atomically.
func WriteFile(dir string, l *List) error {
	data, err := l.Marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(Path(dir), data, 0o644); err != nil {
		return fmt.Errorf("mirror list: %w", err)
	}
	return nil
}

// followIdle is how long FollowMirrors waits for a pinned event before it
// writes what changed.
const followIdle = time.Second

// Follow keeps the mirror list (FileName) of the cache in dir from
// the mirrors' "pinned" events until ctx is done. It reads the latest
// event of each mirror (one subject per mirror: the stream's last message
// per subject), writes the list once it has caught up, and rewrites it
// when a mirror appears or its addresses change. Every publisher runs it
// on its cache, and every mirror that keeps a cache of its own
// (--cache-dir): all read the same events and write the same list.
// Failures are logged and retried; it returns only when ctx is done.
func Follow(ctx context.Context, js jetstream.JetStream, stream, dir string, log *zap.Logger) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := follow(ctx, js, stream, dir, log)
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

func follow(ctx context.Context, js jetstream.JetStream, stream, dir string, log *zap.Logger) error {
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
	set := NewSet()
	caughtUp, dirty := false, false
	write := func() {
		l := set.List(time.Now())
		if err := WriteFile(dir, l); err != nil {
			log.Error("mirror list not written", zap.String("file", Path(dir)), zap.Error(err))
			return // kept dirty: tried again at the next idle moment
		}
		dirty = false
		log.Info("mirror list written", zap.String("file", Path(dir)), zap.Int("mirrors", len(l.Mirrors)))
	}
	for {
		nctx, cancel := context.WithTimeout(ctx, followIdle)
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
