package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/lease"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// batchStore is a fakeStore that answers many paths at once, as
// nixstore.DB does, so the publisher batches.
type batchStore struct{ fakeStore }

func (s *batchStore) QueryPathInfos(ctx context.Context, paths []string) (map[string]*nixstore.PathInfo, error) {
	out := map[string]*nixstore.PathInfo{}
	for _, p := range paths {
		if i, err := s.QueryPathInfo(ctx, p); err == nil {
			out[p] = i
		}
	}
	return out, nil
}

// smallStore makes n small paths (and one of more than batchMaxNar)
// in a temp store, each referring to the first.
func smallStore(t *testing.T, n int) (*batchStore, []string) {
	t.Helper()
	st := &batchStore{fakeStore{dir: filepath.Join(t.TempDir(), "store"), infos: map[string]*nixstore.PathInfo{}}}
	var paths []string
	for i := 0; i <= n; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprint(i)))
		hash := nixbase32.EncodeToString(sum[:])[:32]
		p := filepath.Join(st.dir, hash+fmt.Sprintf("-small-%d", i))
		size := 100 + i*37
		if i == n {
			size = batchMaxNar + 1 // published alone
		}
		body := bytes.Repeat([]byte(fmt.Sprintf("%d ", i)), size/2)
		if i > 0 {
			body = append(body, paths[0]...)
		}
		if err := os.MkdirAll(st.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := nar.DumpPath(&buf, p); err != nil {
			t.Fatal(err)
		}
		sum = sha256.Sum256(buf.Bytes())
		info := &nixstore.PathInfo{Path: p, NarHash: "sha256:" + nixbase32.EncodeToString(sum[:]), NarSize: uint64(buf.Len()),
			Deriver: filepath.Join(st.dir, hash[:31]+"d-small.drv")}
		if i > 0 {
			info.References = []string{paths[0]}
		}
		st.infos[p] = info
		paths = append(paths, p)
	}
	return st, paths
}

// refsParams are the publisher's default import parameters: the
// nix-refs chunker, whose DAGs the publisher builds, and can batch.
func refsParams() ipfs.Params {
	p := ipfs.DefaultParams()
	p.Chunker = DefaultChunker
	return p
}

// countingIPFS counts dag imports.
type countingIPFS struct {
	fakeIPFS
	mu      sync.Mutex
	imports int
}

func (c *countingIPFS) DagImport(ctx context.Context, cars []io.Reader, pin bool) (map[cid.Cid]string, error) {
	c.mu.Lock()
	c.imports++
	c.mu.Unlock()
	return c.fakeIPFS.DagImport(ctx, cars, pin)
}

// TestBatchPublishesLikeOneByOne: a closure of many small paths (and one
// large one, and one corrupt one) is published in batches, with a few dag
// imports instead of one a path; every good path's narinfo is the very
// file a single publish writes (same NAR, CID and signatures), and the
// corrupt path fails the event as Corrupt, naming it, without holding
// back the others.
func TestBatchPublishesLikeOneByOne(t *testing.T) {
	const n = 150
	st, paths := smallStore(t, n)
	corrupt := paths[7]
	st.infos[corrupt].NarHash = "sha256:" + strings.Repeat("0", 52)
	sk, _, _ := signature.GenerateKeypair("test-1", nil)
	newPub := func(store nixstore.Store, node IPFS) (*Publisher, string) {
		dir := filepath.Join(t.TempDir(), "cache")
		p, err := New(Options{Cache: Cache{Dir: dir}, Key: sk, Params: refsParams()}, store, node, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p, dir
	}
	node := &countingIPFS{}
	pub, dir := newPub(st, node)
	err := pub.HandleBuilt(context.Background(), &events.Built{StoreDir: st.dir, OutPaths: paths})
	if !errs.Is(err, errs.Corrupt) || !strings.Contains(err.Error(), corrupt) || strings.Count(err.Error(), "is corrupt") != 1 {
		t.Fatalf("HandleBuilt = %v, want one Corrupt error naming %s", err, corrupt)
	}
	// 150 small paths: one batch for each of the 4 slots; the large one
	// alone.
	if node.imports != 5 {
		t.Errorf("%d dag imports for %d small paths and a large one, want 5 (a batch a slot, and one)", node.imports, n)
	}

	// The same paths, one by one (a store that cannot batch).
	single, sdir := newPub(&st.fakeStore, &fakeIPFS{})
	for _, sp := range paths {
		if sp == corrupt {
			continue
		}
		if _, err := single.PublishPath(context.Background(), sp); err != nil {
			t.Fatal(err)
		}
	}
	for _, sp := range paths {
		hp := storepath.HashPart(sp)
		got, _ := os.ReadFile(filepath.Join(dir, hp+".narinfo"))
		if sp == corrupt {
			if got != nil {
				t.Errorf("corrupt path %s got a narinfo", sp)
			}
			continue
		}
		want, _ := os.ReadFile(filepath.Join(sdir, hp+".narinfo"))
		if len(want) == 0 || !bytes.Equal(got, want) {
			t.Errorf("%s: batch narinfo\n%s\nsingle\n%s", sp, got, want)
			continue
		}
		ni, _ := pub.opt.Cache.ReadNarInfo(hp)
		if !pub.narPresent(ni) || ni.IPFSHash == "" {
			t.Errorf("%s: NAR missing or no CID: %+v", sp, ni)
		}
	}
	// The CID is nardag's, built from the NAR with the path's hashes.
	var buf bytes.Buffer
	nar.DumpPath(&buf, paths[3])
	want, _ := nardag.Build(context.Background(), &buf, DefaultChunker, refHashes(st.infos[paths[3]]), func(cid.Cid, []byte) error { return nil })
	if ni, _ := pub.opt.Cache.ReadNarInfo(storepath.HashPart(paths[3])); ni.IPFSHash != want.String() {
		t.Errorf("CID %s, nardag builds %s", ni.IPFSHash, want)
	}
	// Nothing half-written is left.
	for _, f := range cacheFiles(t, dir) {
		if strings.Contains(f, ".tmp-") {
			t.Errorf("temp file left: %s", f)
		}
	}

	// A second event of the same closure finds everything done but the
	// corrupt path, which it tries again, alone in its import.
	before := node.imports
	if err := pub.HandleBuilt(context.Background(), &events.Built{StoreDir: st.dir, OutPaths: paths}); !errs.Is(err, errs.Corrupt) {
		t.Fatalf("second HandleBuilt = %v", err)
	}
	if node.imports-before != 1 {
		t.Errorf("%d dag imports for a closure published but for one path", node.imports-before)
	}
}

// pathHeldLocker reports the lease of one path held by another publisher
// the first times it is asked, as a publisher working on it would.
type pathHeldLocker struct {
	mu    sync.Mutex
	held  string
	times int
}

func (l *pathHeldLocker) Lock(ctx context.Context, key, sp string) (context.Context, func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sp == l.held && l.times > 0 {
		l.times--
		return nil, nil, errs.E(errs.Transient, fmt.Errorf("being published by another: %w", lease.ErrHeld))
	}
	return ctx, func() {}, nil
}

// TestBatchLeaseHeldGoesAlone: a path whose lease another publisher holds
// leaves its batch and is published the single way once the lease is
// free; the others are not held back.
func TestBatchLeaseHeldGoesAlone(t *testing.T) {
	st, paths := smallStore(t, 10)
	sk, _, _ := signature.GenerateKeypair("test-1", nil)
	lk := &pathHeldLocker{held: paths[4], times: 2}
	pub, err := New(Options{Cache: Cache{Dir: filepath.Join(t.TempDir(), "cache")}, Key: sk, Params: refsParams(), Locker: lk},
		st, &countingIPFS{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.HandleBuilt(context.Background(), &events.Built{StoreDir: st.dir, OutPaths: paths}); err != nil {
		t.Fatal(err)
	}
	for _, sp := range paths {
		if ni, _ := pub.opt.Cache.ReadNarInfo(storepath.HashPart(sp)); ni == nil || ni.IPFSHash == "" {
			t.Errorf("%s not published", sp)
		}
	}
	if lk.times != 0 {
		t.Errorf("the held path's lease was asked for %d times too few", lk.times)
	}
}

// TestBatchPathsFollowsTheFileLimit: a batch keeps a temp file open per
// path, so a low open-file limit makes batches smaller.
func TestBatchPathsFollowsTheFileLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Skip(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	low := rl
	low.Cur = 200
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	if got := batchPaths(4); got != 25 {
		t.Errorf("batchPaths(4) with 200 files = %d, want 25", got)
	}
	if got := batchPaths(1000); got != 2 {
		t.Errorf("batchPaths(1000) with 200 files = %d, want the least, 2", got)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= 2*4*batchMaxPaths {
		if got := batchPaths(4); got != batchMaxPaths {
			t.Errorf("batchPaths(4) with %d files = %d, want %d", rl.Cur, got, batchMaxPaths)
		}
	}
}

// blockingIPFS holds its first dag import until release is closed.
type blockingIPFS struct {
	fakeIPFS
	first   sync.Once
	started chan struct{}
	release chan struct{}
}

func (b *blockingIPFS) DagImport(ctx context.Context, cars []io.Reader, pin bool) (map[cid.Cid]string, error) {
	wait := false
	b.first.Do(func() { wait = true })
	if wait {
		close(b.started)
		<-b.release
	}
	return b.fakeIPFS.DagImport(ctx, cars, pin)
}

// TestBatchDoesNotHoldBackOtherPaths: while a batch is published (its
// import held), a path of another event published alone goes ahead, even
// with one slot: batches have slots of their own.
func TestBatchDoesNotHoldBackOtherPaths(t *testing.T) {
	st, paths := smallStore(t, 6)
	large := paths[len(paths)-1] // more than batchMaxNar: alone
	sk, _, _ := signature.GenerateKeypair("test-1", nil)
	node := &blockingIPFS{started: make(chan struct{}), release: make(chan struct{})}
	pub, err := New(Options{Cache: Cache{Dir: filepath.Join(t.TempDir(), "cache")}, Key: sk, Params: refsParams(), Concurrency: 1},
		st, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- pub.HandleBuilt(context.Background(), &events.Built{StoreDir: st.dir, OutPaths: paths[:len(paths)-1]})
	}()
	<-node.started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := pub.PublishPath(ctx, large); err != nil {
		t.Errorf("a path published alone while a batch held its import: %v", err)
	}
	close(node.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
