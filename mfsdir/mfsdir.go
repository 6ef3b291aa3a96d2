// Package mfsdir keeps a binary cache as a UnixFS directory in kubo's
// MFS, following the stream's published and retired events, so that any
// IPFS gateway serves the cache to stock Nix (the publisher's --mfs-dir).
package mfsdir

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Node is what keeping the cache as a UnixFS directory needs from kubo.
type Node interface {
	FilesWrite(ctx context.Context, p string, data []byte, flush bool) error
	FilesLink(ctx context.Context, c cid.Cid, p string, flush bool) error
	FilesRm(ctx context.Context, p string, flush bool) error
	FilesMkdir(ctx context.Context, p string) error
	FilesStat(ctx context.Context, p string) (cid.Cid, error)
	Self(ctx context.Context) (ipfs.Node, error)
}

var _ Node = (*ipfs.Kubo)(nil)

// DefaultAnnounceEvery is how often, at most, a new cache root is
// announced (docs/BENCHMARKS.md, "mfs").
const DefaultAnnounceEvery = 10 * time.Second

// Cache keeps the binary cache as a UnixFS directory in kubo's MFS:
//
//	DIR/nix-cache-info
//	DIR/<hashpart>.narinfo        the narinfo, as in the cache directory
//	DIR/nar/<filehash>.nar        a link to the NAR's CID (no copy)
//
// so that any IPFS gateway serves the cache to stock Nix as
// http://GATEWAY/ipfs/<root>. kubo shards the directories (HAMT) once
// they grow large. Every change is flushed to the MFS root at once, which
// costs little (docs/BENCHMARKS.md, "mfs") and means a kubo restart loses
// nothing acknowledged; the root CID is announced debounced (Announce).
//
// The directory follows the stream (Follow): "published" events add paths,
// with the narinfo rebuilt from the event byte for byte
// (mirrorcache.NarInfo), "retired" events remove them, in stream order and
// acked once done, so it holds what every publisher of the cache published
// and nothing prune retired. The NAR link is made before the narinfo, so
// the directory never names a NAR it lacks.
type Cache struct {
	node     Node
	dir      string
	storeDir string
	host     string
	log      *zap.Logger

	initOnce sync.Mutex
	inited   bool

	mu      sync.Mutex
	changed chan struct{} // signalled on every change
	last    cid.Cid       // last root announced
}

// New keeps the cache under the MFS directory dir (absolute).
func New(node Node, dir, storeDir, host string, log *zap.Logger) (*Cache, error) {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || dir == "/" {
		return nil, errs.Errorf(errs.Invalid, "--mfs-dir %q: want an absolute, clean MFS path other than /", dir)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Cache{node: node, dir: dir, storeDir: storeDir, host: host, log: log, changed: make(chan struct{}, 1)}, nil
}

// Dir is the MFS directory.
func (m *Cache) Dir() string { return m.dir }

func (m *Cache) init(ctx context.Context) error {
	m.initOnce.Lock()
	defer m.initOnce.Unlock()
	if m.inited {
		return nil
	}
	if err := m.node.FilesMkdir(ctx, m.dir+"/"+cachedir.NarDirName); err != nil {
		return fmt.Errorf("mfs %s: %w", m.dir, err)
	}
	if err := m.node.FilesWrite(ctx, m.dir+"/"+cachedir.CacheInfoName, []byte("StoreDir: "+m.storeDir+"\n"), true); err != nil {
		return fmt.Errorf("mfs %s: %w", m.dir, err)
	}
	m.inited = true
	m.signal()
	return nil
}

// Add puts ni (signed, with its IPFSHash) into the directory.
func (m *Cache) Add(ctx context.Context, ni *narinfo.NarInfo) error {
	if err := m.init(ctx); err != nil {
		return err
	}
	c, err := cid.Decode(ni.IPFSHash)
	if err != nil {
		return errs.Errorf(errs.Invalid, "mfs: narinfo of %s: IPFSHash %q: %w", ni.StorePath, ni.IPFSHash, err)
	}
	if err := cachedir.CheckNarURL(ni.URL); err != nil {
		return errs.Errorf(errs.Invalid, "mfs: narinfo of %s: URL %q", ni.StorePath, ni.URL)
	}
	if err := m.node.FilesLink(ctx, c, m.dir+"/"+ni.URL, true); err != nil {
		return fmt.Errorf("mfs: link NAR of %s: %w", ni.StorePath, err)
	}
	hp := storepath.HashPart(ni.StorePath)
	if err := m.node.FilesWrite(ctx, m.dir+"/"+cachedir.NarInfoName(hp), []byte(ni.String()), true); err != nil {
		return fmt.Errorf("mfs: narinfo of %s: %w", ni.StorePath, err)
	}
	m.signal()
	return nil
}

// Remove takes a retired path out of the directory: its narinfo, and its
// NAR link when the event names a CID (prune leaves the CID out when
// another path in the cache shares the NAR, whose link must stay).
func (m *Cache) Remove(ctx context.Context, ev *events.Retired) error {
	hp := storepath.HashPart(ev.StorePath)
	if err := m.node.FilesRm(ctx, m.dir+"/"+cachedir.NarInfoName(hp), true); err != nil {
		return fmt.Errorf("mfs: remove narinfo of %s: %w", ev.StorePath, err)
	}
	if strings.HasPrefix(ev.NarHash, "sha256:") && ev.CID != "" {
		if err := m.node.FilesRm(ctx, m.dir+"/"+cachedir.NarURL(ev.NarHash), true); err != nil {
			return fmt.Errorf("mfs: remove NAR link of %s: %w", ev.StorePath, err)
		}
	}
	m.signal()
	return nil
}

// Durable is the durable consumer that keeps the MFS directory.
const Durable = "mfs"

// Follow keeps the directory in step with the stream until ctx ends: one
// event at a time, in stream order, so a path retired and published again
// ends in the directory. A published.v1 event (no signature) adds nothing.
func (m *Cache) Follow(ctx context.Context, js jetstream.JetStream, stream string) error {
	return events.Consume(ctx, js, events.ConsumerOptions{
		Stream:         stream,
		Durable:        Durable,
		FilterSubjects: []string{events.SubjectPublished, events.SubjectRetired},
		Concurrency:    1,
		Logger:         m.log,
	}, func(ctx context.Context, d events.Delivery) error {
		switch ev := d.Event.(type) {
		case *events.Published:
			if ev.StoreDir != m.storeDir {
				return errs.Errorf(errs.Invalid, "mfs: event for store %s; this directory is for %s", ev.StoreDir, m.storeDir)
			}
			ni, err := mirrorcache.NarInfo(ev)
			if errors.Is(err, mirrorcache.ErrUnsigned) {
				m.log.Warn("published.v1 event: no narinfo for the MFS directory", zap.String("store_path", ev.StorePath))
				return nil
			}
			if err != nil {
				return err
			}
			return m.Add(ctx, ni)
		case *events.Retired:
			return m.Remove(ctx, ev)
		}
		return errs.Errorf(errs.Invalid, "mfs: a %s event on %s", events.Head(d.Event).Type, d.Msg.Subject())
	})
}

func (m *Cache) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Announce sends a "cacheroot" event whenever the directory changed, at
// most once per every, until ctx ends: a burst of publishes gives one
// announcement at its start and one after it, and a quiet cache none. The
// root announced last is announced again at start, so a mirror that missed
// it (or a publisher restart) converges.
func (m *Cache) Announce(ctx context.Context, js jetstream.JetStream, every time.Duration) {
	if every <= 0 {
		every = DefaultAnnounceEvery
	}
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.changed:
		}
		if wait := every - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		// Changes made while waiting are in this root.
		select {
		case <-m.changed:
		default:
		}
		last = time.Now()
		if err := m.announceOnce(ctx, js); err != nil && ctx.Err() == nil {
			m.log.Warn("cannot announce the cache root; will retry", zap.Error(err))
			m.signal()
		}
	}
}

// AnnounceNow announces the current root if it differs from the last one
// announced, and returns it.
func (m *Cache) AnnounceNow(ctx context.Context, js jetstream.JetStream) (cid.Cid, error) {
	if err := m.announceOnce(ctx, js); err != nil {
		return cid.Undef, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, nil
}

func (m *Cache) announceOnce(ctx context.Context, js jetstream.JetStream) error {
	if err := m.init(ctx); err != nil {
		return err
	}
	root, err := m.node.FilesStat(ctx, m.dir)
	if err != nil {
		return fmt.Errorf("mfs stat %s: %w", m.dir, err)
	}
	m.mu.Lock()
	same := m.last.Equals(root)
	m.mu.Unlock()
	if same {
		return nil
	}
	self, err := m.node.Self(ctx)
	if err != nil {
		return fmt.Errorf("kubo identity: %w", err)
	}
	ev := &events.CacheRoot{Host: m.host, StoreDir: m.storeDir, Root: root.String(),
		Publisher: events.Node{PeerID: self.PeerID, Addrs: append([]string{}, self.Addrs...)}}
	if ev.Host == "" {
		ev.Host = "unknown"
	}
	events.Seal(ev)
	if js != nil {
		if _, err := events.Publish(ctx, js, events.SubjectCacheRoot, ev); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.last = root
	m.mu.Unlock()
	m.log.Info("cache root announced", zap.String("root", root.String()), zap.String("mfs_dir", m.dir))
	return nil
}

// Sync fills a directory that does not exist yet with every narinfo of
// cache: for a cache that existed before --mfs-dir was set (or whose
// stream no longer holds its whole history), or a kubo that lost its MFS.
// It runs at start, before Follow.
func (m *Cache) Sync(ctx context.Context, cache cachedir.Cache) (added int, err error) {
	// Only into a new directory: afterwards Follow keeps it, and a stat
	// per path at every start would cost minutes for a large cache.
	if _, err := m.node.FilesStat(ctx, m.dir); err == nil {
		return 0, nil
	} else if !ipfs.IsNotExist(err) {
		return 0, err
	}
	if err := m.init(ctx); err != nil {
		return 0, err
	}
	names, err := cache.NarInfoFiles()
	if err != nil {
		return 0, err
	}
	for _, name := range names {
		if ctx.Err() != nil {
			return added, ctx.Err()
		}
		hp := cachedir.HashPartOf(name)
		if _, err := m.node.FilesStat(ctx, m.dir+"/"+cachedir.NarInfoName(hp)); err == nil {
			continue
		} else if !ipfs.IsNotExist(err) {
			return added, err
		}
		ni, err := cache.ReadNarInfo(hp)
		if err != nil {
			return added, err
		}
		if ni == nil || ni.IPFSHash == "" {
			continue
		}
		if err := m.Add(ctx, ni); err != nil {
			return added, err
		}
		added++
	}
	return added, nil
}

// LastAnnounced is the root announced last, cid.Undef before the first.
func (m *Cache) LastAnnounced() cid.Cid {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}
