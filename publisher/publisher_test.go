package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
)

// fakeStore serves PathInfo for directories in a temp "store"; unit tests
// only. The integration tests run the real Nix database.
type fakeStore struct {
	dir   string
	infos map[string]*nixstore.PathInfo
}

func (s *fakeStore) StoreDir() string { return s.dir }
func (s *fakeStore) QueryPathInfo(_ context.Context, p string) (*nixstore.PathInfo, error) {
	if i, ok := s.infos[p]; ok {
		c := *i
		return &c, nil
	}
	return nil, errs.E(errs.Invalid, nixstore.ErrNotValid)
}
func (s *fakeStore) Closure(_ context.Context, paths []string) ([]string, error) { return paths, nil }
func (s *fakeStore) Close() error                                                { return nil }

// fakeIPFS reads what it is given and returns a raw-leaf CID of it.
type fakeIPFS struct {
	adds atomic.Int32
	fail error

	mu       sync.Mutex
	at       []string  // the files AddAt was told the bytes will be in
	existed  []bool    // whether each was there when AddAt was called
	unpinned []cid.Cid // what Unpin was asked to drop
}

func (f *fakeIPFS) Add(ctx context.Context, r io.Reader, p ipfs.Params, pin bool) (cid.Cid, error) {
	f.adds.Add(1)
	if f.fail != nil {
		io.CopyN(io.Discard, r, 10)
		return cid.Undef, f.fail
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return cid.Undef, err
	}
	mh, _ := multihash.Encode(h.Sum(nil), multihash.SHA2_256)
	return cid.NewCidV1(cid.Raw, mh), nil
}
func (f *fakeIPFS) AddAt(ctx context.Context, r io.Reader, path string, p ipfs.Params, pin bool) (cid.Cid, error) {
	_, err := os.Stat(path)
	f.mu.Lock()
	f.at = append(f.at, path)
	f.existed = append(f.existed, err == nil)
	f.mu.Unlock()
	return f.Add(ctx, r, p, pin)
}
func (f *fakeIPFS) Unpin(_ context.Context, c cid.Cid) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unpinned = append(f.unpinned, c)
	return nil
}
func (f *fakeIPFS) DagImport(_ context.Context, cars []io.Reader, _ bool) (map[cid.Cid]string, error) {
	f.adds.Add(1)
	if f.fail != nil {
		return nil, f.fail
	}
	return drainCARs(cars)
}
func (f *fakeIPFS) Self(context.Context) (ipfs.Node, error) {
	return ipfs.Node{PeerID: "12D3KooWfake", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}, nil
}

func setup(t *testing.T) (*Publisher, *fakeStore, *fakeIPFS, string) {
	t.Helper()
	root := t.TempDir()
	st := &fakeStore{dir: filepath.Join(root, "store"), infos: map[string]*nixstore.PathInfo{}}
	p := filepath.Join(st.dir, "0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello")
	os.MkdirAll(filepath.Join(p, "bin"), 0o755)
	os.WriteFile(filepath.Join(p, "bin", "hello"), []byte("#!/bin/sh\necho hello\n"), 0o755)
	var buf bytes.Buffer
	if err := nar.DumpPath(&buf, p); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	st.infos[p] = &nixstore.PathInfo{Path: p, NarHash: "sha256:" + nixbase32.EncodeToString(sum[:]), NarSize: uint64(buf.Len()),
		References: []string{p}, Deriver: filepath.Join(st.dir, "y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello.drv")}
	sk, _, _ := signature.GenerateKeypair("test-1", nil)
	fi := &fakeIPFS{}
	pub, err := New(Options{Cache: Cache{Dir: filepath.Join(root, "cache")}, Key: sk, Params: ipfs.DefaultParams()}, st, fi, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, st, fi, p
}

func cacheFiles(t *testing.T, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestPublishPathIsIdempotent(t *testing.T) {
	pub, _, fi, p := setup(t)
	ctx := context.Background()
	ev, err := pub.PublishPath(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pub.opt.Cache.NarInfoPath("0c6kzph7l0dcbfmjap64f0czdafn3b7x"))
	if err != nil {
		t.Fatal(err)
	}
	ni, err := narinfo.ParseBytes(b)
	if err != nil || ni.Validate() != nil {
		t.Fatalf("narinfo %v\n%s", err, b)
	}
	if ni.IPFSHash != ev.CID || ni.Deriver != "y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello.drv" || len(ni.Sigs) != 1 {
		t.Errorf("narinfo %+v, event %+v", ni, ev)
	}
	for i := 0; i < 3; i++ {
		if _, err := pub.PublishPath(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if n := fi.adds.Load(); n != 1 {
		t.Errorf("%d adds for one path published four times", n)
	}
	// Concurrent requests for one path share one publish.
	os.Remove(pub.opt.Cache.NarInfoPath("0c6kzph7l0dcbfmjap64f0czdafn3b7x"))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); pub.PublishPath(ctx, p) }()
	}
	wg.Wait()
	if n := fi.adds.Load(); n > 2 {
		t.Errorf("%d adds: concurrent publishes of one path were not shared", n)
	}
}

func TestCorruptPathRefused(t *testing.T) {
	pub, st, fi, p := setup(t)
	st.infos[p].NarHash = "sha256:" + strings.Repeat("0", 52)
	_, err := pub.PublishPath(context.Background(), p)
	if !errs.Is(err, errs.Corrupt) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("err = %v, want kind Corrupt", err)
	}
	// Corrupt wins over kubo failing on the same NAR: a retry cannot help.
	fi.fail = errs.E(errs.Transient, errors.New("kubo read a file that is not there yet"))
	if _, err := pub.PublishPath(context.Background(), p); !errs.Is(err, errs.Corrupt) {
		t.Fatalf("with kubo failing too: err = %v, want kind Corrupt", err)
	}
	for _, f := range cacheFiles(t, pub.opt.Cache.Dir) {
		if f != "nix-cache-info" {
			t.Errorf("corrupt path left %s in the cache", f)
		}
	}
}

func TestIPFSFailureLeavesNothing(t *testing.T) {
	pub, _, fi, p := setup(t)
	fi.fail = errs.E(errs.Transient, errors.New("kubo unreachable"))
	_, err := pub.PublishPath(context.Background(), p)
	if !errs.Is(err, errs.Transient) {
		t.Fatalf("err = %v, want kind Transient", err)
	}
	for _, f := range cacheFiles(t, pub.opt.Cache.Dir) {
		if f != "nix-cache-info" {
			t.Errorf("failed publish left %s in the cache", f)
		}
	}
	fi.fail = nil
	if _, err := pub.PublishPath(context.Background(), p); err != nil {
		t.Fatalf("retry after kubo came back: %v", err)
	}
}

// TestNocopyAddsWhileWriting: with nocopy a NAR of more than one chunk
// goes to kubo's add in the pass that writes it, by reference to the
// file it becomes (not there yet), and that file holds the bytes kubo
// read once the path is published; a NAR of one chunk is added from its
// file once in place (kubo reads a one-block file's root back during the
// add). A NAR that does not match the store's record is unpinned, and no
// file is left.
func TestNocopyAddsWhileWriting(t *testing.T) {
	pub, st, fi, small := setup(t)
	pub.opt.Params.Chunker = KuboChunker
	pub.opt.Params.Nocopy = true
	big := addPath(t, st, "1b9p07z77phvv2hcj8s9jwgb3s5lgq1c-big", 3<<20)
	for _, c := range []struct {
		path     string
		streamed bool
	}{{big, true}, {small, false}} {
		fi.at, fi.existed = nil, nil
		ev, err := pub.PublishPath(context.Background(), c.path)
		if err != nil {
			t.Fatal(err)
		}
		file := pub.opt.Cache.NarPath(ev.NarURL)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if len(fi.at) != 1 || fi.at[0] != file || fi.existed[0] == c.streamed {
			t.Fatalf("%s: AddAt told %q (there already: %v), want [%s] (there: %v)", c.path, fi.at, fi.existed, file, !c.streamed)
		}
		h := sha256.Sum256(b)
		mh, _ := multihash.Encode(h[:], multihash.SHA2_256)
		if want := cid.NewCidV1(cid.Raw, mh); ev.CID != want.String() {
			t.Errorf("%s: CID %s of the bytes added, the file holds %s", c.path, ev.CID, want)
		}
	}
	if len(fi.unpinned) != 0 {
		t.Errorf("unpinned %v after good publishes", fi.unpinned)
	}

	pub2, st2, fi2, _ := setup(t)
	pub2.opt.Params.Chunker = KuboChunker
	pub2.opt.Params.Nocopy = true
	big2 := addPath(t, st2, "1b9p07z77phvv2hcj8s9jwgb3s5lgq1c-big", 3<<20)
	st2.infos[big2].NarHash = "sha256:" + strings.Repeat("0", 52)
	if _, err := pub2.PublishPath(context.Background(), big2); !errs.Is(err, errs.Corrupt) {
		t.Fatalf("corrupt path with nocopy: %v, want kind Corrupt", err)
	}
	if len(fi2.unpinned) != 1 {
		t.Errorf("corrupt path with nocopy: unpinned %v, want the CID added", fi2.unpinned)
	}
	for _, f := range cacheFiles(t, pub2.opt.Cache.Dir) {
		if f != "nix-cache-info" {
			t.Errorf("corrupt path left %s in the cache", f)
		}
	}
}

// addPath puts a store path holding one file of size random bytes into
// the fake store.
func addPath(t *testing.T, st *fakeStore, name string, size int) string {
	t.Helper()
	p := filepath.Join(st.dir, name)
	data := make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := nar.DumpPath(&buf, p); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	st.infos[p] = &nixstore.PathInfo{Path: p, NarHash: "sha256:" + nixbase32.EncodeToString(sum[:]), NarSize: uint64(buf.Len())}
	return p
}

func TestNotInStoreIsRetriedThenExhausted(t *testing.T) {
	pub, st, _, _ := setup(t)
	// Not (yet) in the store: retried up to --max-attempts, since on a Hydra
	// master a remote build's outputs arrive after its builder's hook fired.
	_, err := pub.PublishPath(context.Background(), filepath.Join(st.dir, "1b9p07z77phvv2hf6gm9f28syp39f1ag-gone"))
	if errs.KindOf(err) != errs.NotYet || !errors.Is(err, nixstore.ErrNotValid) {
		t.Fatalf("err = %v (kind %v), want kind NotYet wrapping ErrNotValid", err, errs.KindOf(err))
	}
	if _, err := pub.PublishPath(context.Background(), "/etc/passwd"); !errs.Is(err, errs.Invalid) {
		t.Fatalf("err = %v, want Invalid", err)
	}
}

// TestPublishRefsChunker: with a nix-refs chunker the NAR goes through
// Import (kubo's add has no such chunker), cut around the path's hash,
// and the CID recorded is nardag's, with the chunker's name beside it.
func TestPublishRefsChunker(t *testing.T) {
	pub, _, fi, p := setup(t)
	pub.opt.Params.Chunker = "nix-refs-4096-524288"
	ev, err := pub.PublishPath(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := nar.DumpPath(&buf, p); err != nil {
		t.Fatal(err)
	}
	want, err := nardag.Build(context.Background(), &buf, "nix-refs-4096-524288", []string{"0c6kzph7l0dcbfmjap64f0czdafn3b7x"}, func(cid.Cid, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if ev.CID != want.String() || ev.Import.Chunker != "nix-refs-4096-524288" || fi.adds.Load() != 1 {
		t.Errorf("event CID %s chunker %s after %d imports, want %s", ev.CID, ev.Import.Chunker, fi.adds.Load(), want)
	}
}

// TestChunkerDefault: nix-refs by default, size-262144 with nocopy unless
// --chunker says otherwise, and an explicit nix-refs chunker with nocopy
// is a Config error.
func TestChunkerDefault(t *testing.T) {
	for _, c := range []struct {
		chunker string
		nocopy  bool
		want    string
		kind    errs.Kind
	}{
		{"", false, DefaultChunker, 0},
		{"", true, NocopyChunker, 0},
		{"buzhash", true, "buzhash", 0},
		{"nix-refs-4096-1048576", false, "nix-refs-4096-1048576", 0},
		{"nix-refs-4096-524288", true, "", errs.Config},
		{"nix-refs-x", false, "", errs.Invalid},
	} {
		cfg := Config{Chunker: c.chunker, Nocopy: c.nocopy}
		p, err := cfg.Params()
		if c.kind != 0 {
			if !errs.Is(err, c.kind) {
				t.Errorf("%+v: %v, want kind %v", c, err, c.kind)
			}
			continue
		}
		if err != nil || p.Chunker != c.want {
			t.Errorf("%+v: chunker %s (%v), want %s", c, p.Chunker, err, c.want)
		}
	}
	if DefaultChunker != nardag.DefaultRefs.String() {
		t.Errorf("DefaultChunker %s, nardag's default %s", DefaultChunker, nardag.DefaultRefs)
	}
}

// drainCARs reads the CARs a DAG import sends, as kubo would, and reports
// the roots of their headers pinned.
func drainCARs(cars []io.Reader) (map[cid.Cid]string, error) {
	roots := map[cid.Cid]string{}
	for _, r := range cars {
		br, err := carv2.NewBlockReader(r)
		if err != nil {
			return nil, err
		}
		for _, c := range br.Roots {
			roots[c] = ""
		}
		for {
			if _, err := br.Next(); err == io.EOF {
				break
			} else if err != nil {
				return nil, err
			}
		}
	}
	return roots, nil
}
