// Package scalestate builds, fast, the state a mirror has after a long
// life: a stream holding one "published" event per path, a kubo node
// holding every path's NAR pinned, and the mirror's --cache-dir holding
// every path's narinfo. The paths are synthcache's nixpkgs-shaped ones.
//
// Pinning a million CIDs one `pin add` at a time takes hours; here the
// NARs (one raw block each, as the publisher's CIDv1 of a small NAR) go
// into kubo as CAR files through `ipfs dag import --pin-roots`, each CAR
// naming its blocks as roots, so kubo pins them in one pass per file. The
// narinfos are written without an fsync each: this is a fixture, not a
// cache that must survive a crash.
package scalestate

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Options say what Build builds. A zero JS, KuboRepo or CacheDir leaves
// that part out.
type Options struct {
	// Seed names the path set (synthcache.Nixpkgs); N is how many.
	Seed string
	N    int
	// JS is where the published events go, on events.DefaultStream.
	JS jetstream.JetStream
	// Publisher is the node the events name as holding the NARs.
	Publisher events.Node
	// KuboRepo is the IPFS_PATH of the node to fill (its daemon running,
	// or not); Ipfs the ipfs binary ("" is "ipfs" on PATH).
	KuboRepo string
	Ipfs     string
	// CARBlocks is how many blocks go in one CAR; 0 is 50,000.
	CARBlocks int
	// CacheDir is the mirror's --cache-dir to fill (mirrorcache layout).
	CacheDir string
	// Time is the first event's time; each later path one second later.
	Time time.Time
}

// Stats is what Build did, and how long each part took.
type Stats struct {
	Events, Pins, NarInfos int
	// NarInfoBytes is the total size of the narinfos written.
	NarInfoBytes  int64
	Publish, Pin  time.Duration
	Write         time.Duration
	LastStorePath string
}

// Sig is the signature every synthetic narinfo carries: a well-formed
// "name:base64" line, not a valid signature (nothing here checks one).
var Sig = "scale-1:" + base64.StdEncoding.EncodeToString(make([]byte, 64))

// Path is one path's NAR, CID and published event.
type Path struct {
	synthcache.Path
	NAR   []byte
	CID   cid.Cid
	Event *events.Published
}

// MakePath returns p's NAR (as synthcache writes it), its raw-block CIDv1
// and the published event announcing it from publisher at t.
func MakePath(p synthcache.Path, publisher events.Node, t time.Time) Path {
	nar := synthcache.NAR(p)
	sum := sha256.Sum256(nar)
	h := nixbase32.EncodeToString(sum[:])
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	c := cid.NewCidV1(cid.Raw, mh)
	refs := []string{}
	for _, r := range p.Refs {
		refs = append(refs, filepath.Base(r))
	}
	ev := &events.Published{
		Header: events.Header{Time: t}, Host: "a", StoreDir: storepath.DefaultStoreDir, StorePath: p.StorePath,
		NarHash: "sha256:" + h, NarSize: int64(len(nar)), References: refs,
		CacheURL: "file:///cache", NarURL: cachedir.NarURL(h), CID: c.String(),
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: publisher, Sigs: []string{Sig},
	}
	events.Seal(ev)
	return Path{Path: p, NAR: nar, CID: c, Event: ev}
}

// Each calls fn with the paths of seed from index from to to (exclusive),
// made as MakePath does, event times one second apart from t0.
func Each(seed string, from, to int, publisher events.Node, t0 time.Time, fn func(i int, p Path) error) error {
	return synthcache.Nixpkgs(seed, to, func(i int, sp synthcache.Path) error {
		if i < from {
			return nil
		}
		return fn(i, MakePath(sp, publisher, t0.Add(time.Duration(i)*time.Second)))
	})
}

// Build makes the state o asks for.
func Build(ctx context.Context, o Options) (Stats, error) {
	var st Stats
	if o.CARBlocks <= 0 {
		o.CARBlocks = 50_000
	}
	if o.Ipfs == "" {
		o.Ipfs = "ipfs"
	}
	if o.Time.IsZero() {
		o.Time = time.Now().Add(-time.Duration(o.N) * time.Second)
	}
	var cache *mirrorcache.Cache
	if o.CacheDir != "" {
		c, err := mirrorcache.Open(o.CacheDir, storepath.DefaultStoreDir)
		if err != nil {
			return st, err
		}
		cache = c
	}
	var window []jetstream.PubAckFuture
	drain := func() error {
		for _, f := range window {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish: %w", err)
			case <-time.After(time.Minute):
				return fmt.Errorf("published events not acknowledged within a minute")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		window = window[:0]
		return nil
	}
	var car *carFile
	flush := func() error {
		if car == nil {
			return nil
		}
		start := time.Now()
		err := car.importInto(ctx, o.Ipfs, o.KuboRepo)
		st.Pin += time.Since(start)
		st.Pins += len(car.roots)
		car = nil
		return err
	}
	err := Each(o.Seed, 0, o.N, o.Publisher, o.Time, func(i int, p Path) error {
		st.LastStorePath = p.StorePath
		if o.JS != nil {
			start := time.Now()
			data, err := events.Encode(p.Event)
			if err != nil {
				return err
			}
			f, err := o.JS.PublishAsync(events.SubjectPublished, data, jetstream.WithMsgID(p.Event.ID))
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			if window = append(window, f); len(window) == 4096 {
				if err := drain(); err != nil {
					return err
				}
			}
			st.Events++
			st.Publish += time.Since(start)
		}
		if o.KuboRepo != "" {
			if car == nil {
				var err error
				if car, err = newCARFile(filepath.Join(o.KuboRepo, "..")); err != nil {
					return err
				}
			}
			if err := car.add(p.CID, p.NAR); err != nil {
				return err
			}
			if len(car.roots) == o.CARBlocks {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if cache != nil {
			start := time.Now()
			n, err := writeNarInfo(cache, p)
			if err != nil {
				return err
			}
			st.NarInfos++
			st.NarInfoBytes += n
			st.Write += time.Since(start)
		}
		return ctx.Err()
	})
	if err == nil {
		err = flush()
	}
	if err == nil && o.JS != nil {
		start := time.Now()
		err = drain()
		st.Publish += time.Since(start)
	}
	return st, err
}

// writeNarInfo writes p's narinfo and index entry into the mirror's cache
// as mirrorcache.Cache.Put lays them out, without Put's fsync per file.
func writeNarInfo(c *mirrorcache.Cache, p Path) (int64, error) {
	ni, err := mirrorcache.NarInfo(p.Event)
	if err != nil {
		return 0, err
	}
	d := cachedir.Cache{Dir: c.Dir()}
	hp := storepath.HashPart(p.StorePath)
	fh, _ := cachedir.NarFileHash(ni.URL)
	if err := os.WriteFile(filepath.Join(c.Dir(), cachedir.MirrorIndexDir, fh), []byte(hp+"\n"), 0o644); err != nil {
		return 0, err
	}
	text := []byte(ni.String())
	return int64(len(text)), os.WriteFile(d.NarInfoPath(hp), text, 0o644)
}

// carFile is a CARv1 file being written: raw blocks, each also a root.
// The header, which lists the roots, is written last, in front, by
// importInto (a CAR's header comes first, and its length is known only
// once every root is).
type carFile struct {
	body  *os.File
	w     *bufio.Writer
	roots []cid.Cid
}

func newCARFile(dir string) (*carFile, error) {
	f, err := os.CreateTemp(dir, "scalestate-*.blocks")
	if err != nil {
		return nil, err
	}
	return &carFile{body: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (c *carFile) add(id cid.Cid, data []byte) error {
	c.roots = append(c.roots, id)
	_, err := c.w.Write(nardag.CARBlock(id, data))
	return err
}

// importInto writes the CAR (header, then the blocks) and imports it into
// the node at repo with its roots pinned, then removes the files.
func (c *carFile) importInto(ctx context.Context, ipfsBin, repo string) error {
	defer os.Remove(c.body.Name())
	if err := c.w.Flush(); err != nil {
		c.body.Close()
		return err
	}
	c.body.Close()
	carPath := c.body.Name() + ".car"
	defer os.Remove(carPath)
	out, err := os.Create(carPath)
	if err != nil {
		return err
	}
	if _, err := out.Write(nardag.CARHeader(c.roots)); err != nil {
		out.Close()
		return err
	}
	in, err := os.Open(c.body.Name())
	if err != nil {
		out.Close()
		return err
	}
	_, err = out.ReadFrom(in)
	in.Close()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, ipfsBin, "dag", "import", "--pin-roots=true", "--stats=false", carPath)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+repo, "IPFS_TELEMETRY=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ipfs dag import of %d blocks: %v: %s", len(c.roots), err, lastBytes(b, 2000))
	}
	return nil
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
