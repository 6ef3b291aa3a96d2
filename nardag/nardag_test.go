package nardag_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/chunkstudy"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/nardag"
)

var (
	hashA = "0123456789abcdfghijklmnpqrsvwxyz"
	hashB = "zyxwvsrqpnmlkjihgfdcba9876543210"
)

// testData is pseudo-random bytes with the hashes written at offs.
func testData(size int, seed int64, offs map[int]string) []byte {
	rng := rand.New(rand.NewSource(seed))
	b := make([]byte, size)
	rng.Read(b)
	for off, h := range offs {
		copy(b[off:], h)
	}
	return b
}

// trickle hands out its bytes in reads of random sizes, as a pipe from
// the NAR writer does.
type trickle struct {
	b   []byte
	rng *rand.Rand
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(t.b), 1+t.rng.Intn(100000))
	copy(p, t.b[:n])
	t.b = t.b[n:]
	return n, nil
}

// chunks splits data and checks the splitter's promise to boxo's DAG
// builder, which reads one chunk ahead: a chunk is unchanged until the
// second NextBytes call after the one that returned it.
func chunks(t testing.TB, data []byte, refs nardag.Refs, hashes []string, seed int64) [][]byte {
	t.Helper()
	s := nardag.NewRefSplitter(&trickle{b: data, rng: rand.New(rand.NewSource(seed))}, refs, hashes)
	var out, live [][]byte
	for {
		b, err := s.NextBytes()
		if n := len(out); n > 0 && !bytes.Equal(live[n-1], out[n-1]) {
			t.Fatalf("chunk %d changed during the next NextBytes call", n-1)
		}
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), b...))
		live = append(live, b)
	}
}

// inMemory is the study's splitter (the whole NAR in memory, boxo's
// fixed-size chunker between hashes): the streaming one must cut the
// same.
func inMemory(t testing.TB, data []byte, refs nardag.Refs, hashes []string) [][]byte {
	s, err := chunkstudy.NewRefSplitter(bytes.NewReader(data), fmt.Sprintf("size-%d", refs.Size), hashes)
	if err != nil {
		t.Fatal(err)
	}
	s.Gap = refs.Gap
	var out [][]byte
	for {
		b, err := s.NextBytes()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), b...))
	}
}

// checkCuts: the chunks are the input, every occurrence of a hash starts
// a chunk or lies inside a chunk that starts with one (joined within the
// gap), and ends one or is followed by another within the gap, and the
// streaming splitter cuts as the in-memory one.
func checkCuts(t testing.TB, data []byte, refs nardag.Refs, hashes []string, seed int64) [][]byte {
	t.Helper()
	got := chunks(t, data, refs, hashes, seed)
	if !bytes.Equal(bytes.Join(got, nil), data) {
		t.Fatalf("chunks do not concatenate to the input")
	}
	starts := map[int]bool{}
	ends := map[int]bool{}
	off := 0
	for _, c := range got {
		if len(c) == 0 {
			t.Fatalf("empty chunk at %d", off)
		}
		if len(c) > max(refs.Size, 256<<10) {
			t.Fatalf("chunk of %d bytes at %d", len(c), off)
		}
		starts[off] = true
		off += len(c)
		ends[off] = true
	}
	occ := nardag.Occurrences(data, hashes)
	for i, o := range occ {
		joinedBefore := i > 0 && o-(occ[i-1]+nardag.HashLen) < refs.Gap
		joinedAfter := i+1 < len(occ) && occ[i+1]-(o+nardag.HashLen) < refs.Gap
		if !starts[o] && !joinedBefore {
			t.Errorf("no cut before the hash at %d", o)
		}
		if !ends[o+nardag.HashLen] && !joinedAfter {
			t.Errorf("no cut after the hash at %d", o)
		}
	}
	want := inMemory(t, data, refs, hashes)
	if len(want) != len(got) {
		t.Fatalf("%d chunks, the in-memory splitter made %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(want[i], got[i]) {
			t.Fatalf("chunk %d differs from the in-memory splitter's", i)
		}
	}
	return got
}

func TestRefSplitterCutsAroundEveryHash(t *testing.T) {
	size := nardag.DefaultRefs.Size
	offs := map[int]string{
		1000:          hashA,
		size - 10:     hashB, // across the first fixed-size boundary
		2*size - 32:   hashA, // ends on the second
		2*size + 5000: hashB,
		2*size + 5040: hashA, // joined with the one before
		3 * size:      hashA, // on the third
		4*size - 1:    hashB, // one byte before the fourth
	}
	data := testData(5*size+77, 1, offs)
	got := checkCuts(t, data, nardag.DefaultRefs, []string{hashA, hashB}, 1)
	if n := len(nardag.Occurrences(data, []string{hashA, hashB})); n != len(offs) {
		t.Fatalf("%d occurrences found, want %d", n, len(offs))
	}
	var sizes []int
	for _, c := range got {
		sizes = append(sizes, len(c))
	}
	t.Logf("chunk sizes %v", sizes)
	// An unknown hash is not cut around.
	plain := chunks(t, data, nardag.DefaultRefs, []string{strings.Repeat("0", 32)}, 2)
	if len(plain) != 6 {
		t.Errorf("%d chunks without known hashes, want 6 fixed ones", len(plain))
	}
}

// TestRefSplitterReusesBuffersSafely: through many buffer swaps (a NAR
// of several buffers, small and default chunks, hashes everywhere), no
// chunk changes before the builder is done with it, and the DAG kubo
// would check is the one the bytes make.
func TestRefSplitterReusesBuffersSafely(t *testing.T) {
	offs := map[int]string{}
	for off := 777; off < 20<<20; off += 300_001 {
		offs[off] = hashA
		offs[off+100] = hashB
	}
	data := testData(20<<20+5, 9, offs)
	for _, refs := range []nardag.Refs{nardag.DefaultRefs, {Gap: 64, Size: 4096}, {Gap: 0, Size: nardag.MaxBlock}} {
		checkCuts(t, data, refs, []string{hashA, hashB}, 3)
		// Every block the sink gets hashes to its CID.
		_, err := nardag.Build(context.Background(), &trickle{b: data, rng: rand.New(rand.NewSource(4))}, refs.String(), []string{hashA, hashB},
			func(c cid.Cid, b []byte) error {
				if got, err := c.Prefix().Sum(b); err != nil || !got.Equals(c) {
					return fmt.Errorf("block %s holds bytes hashing to %s", c, got)
				}
				return nil
			})
		if err != nil {
			t.Fatalf("%s: %v", refs, err)
		}
	}
}

func TestParseRefs(t *testing.T) {
	r, err := nardag.ParseRefs("nix-refs-4096-253952")
	if err != nil || r != nardag.DefaultRefs || r.String() != "nix-refs-4096-253952" {
		t.Fatalf("ParseRefs: %v %v", r, err)
	}
	// A block of the default and its bitswap framing fit in a new libp2p
	// stream's first 256 KiB window (nardag.DefaultRefs).
	if nardag.DefaultRefs.Size > 256<<10-4096 {
		t.Errorf("default chunk of %d bytes: a block and its framing no longer fit in 256 KiB", nardag.DefaultRefs.Size)
	}
	for _, bad := range []string{"nix-refs-", "nix-refs-4096", "nix-refs-x-1", "nix-refs-1-0", "nix-refs-1-2097152", "nix-refs-04096-524288", "nix-refs--1-5"} {
		if _, err := nardag.ParseRefs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestBuildMatchesKubo: for kubo's chunkers, Build's root is the CID
// `ipfs add --cid-version=1 --chunker=X` gives the same bytes.
func TestBuildMatchesKubo(t *testing.T) {
	ipfs, err := exec.LookPath("ipfs")
	if err != nil {
		t.Skip("no ipfs on PATH")
	}
	repo := t.TempDir()
	env := append(os.Environ(), "IPFS_PATH="+repo)
	if out, err := (&exec.Cmd{Path: ipfs, Args: []string{"ipfs", "init", "--profile=test"}, Env: env}).CombinedOutput(); err != nil {
		t.Fatalf("ipfs init: %v\n%s", err, out)
	}
	data := testData(47<<20+20, 3, map[int]string{1000: hashA}) // above 174 chunks: two levels
	f := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"buzhash", "size-262144", "size-1048576", "rabin-4096-16384-65536"} {
		out, err := (&exec.Cmd{Path: ipfs, Args: []string{"ipfs", "add", "--offline", "--only-hash", "-Q", "--cid-version=1", "--chunker=" + ch, f}, Env: env}).CombinedOutput()
		if err != nil {
			t.Fatalf("ipfs add: %v\n%s", err, out)
		}
		root, err := nardag.Build(context.Background(), bytes.NewReader(data), ch, nil, func(cid.Cid, []byte) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(out)); root.String() != want {
			t.Errorf("%s: in process %s, kubo %s", ch, root, want)
		}
	}
	// With no hash in the data, nix-refs-G-N cuts as size-N: same CID.
	plain, _ := nardag.Build(context.Background(), bytes.NewReader(data), "size-524288", nil, func(cid.Cid, []byte) error { return nil })
	refs, _ := nardag.Build(context.Background(), &trickle{b: data, rng: rand.New(rand.NewSource(1))}, "nix-refs-4096-524288", []string{hashB}, func(cid.Cid, []byte) error { return nil })
	if plain != refs {
		t.Errorf("nix-refs without hashes %s, size-524288 %s", refs, plain)
	}
}

// FuzzRefSplitter: any bytes, hashes written at any offsets, any gap and
// size: the cuts hold and match the in-memory splitter's.
func FuzzRefSplitter(f *testing.F) {
	f.Add([]byte("abc"), uint16(0), uint16(100), uint16(7), uint16(70), uint8(64))
	f.Add(bytes.Repeat([]byte("0123456789abcdfg"), 100), uint16(3), uint16(33), uint16(31), uint16(64), uint8(8))
	f.Fuzz(func(t *testing.T, data []byte, gap, o1, o2, o3 uint16, size uint8) {
		b := append([]byte(nil), data...)
		b = append(b, make([]byte, 200)...)
		for i, o := range []uint16{o1, o2, o3} {
			if int(o)+nardag.HashLen <= len(b) {
				copy(b[o:], []string{hashA, hashB, hashA}[i])
			}
		}
		refs := nardag.Refs{Gap: int(gap % 300), Size: 1 + int(size)}
		checkCuts(t, b, refs, []string{hashA, hashB}, int64(len(b)))
	})
}

func BenchmarkBuild(b *testing.B) {
	offs := map[int]string{}
	for off := 1000; off < 64<<20; off += 3 << 20 {
		offs[off] = hashA
	}
	data := testData(64<<20, 4, offs)
	for _, ch := range []string{"buzhash", "size-262144", "nix-refs-4096-524288"} {
		b.Run(ch, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if _, err := nardag.Build(context.Background(), bytes.NewReader(data), ch, []string{hashA}, func(cid.Cid, []byte) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// failingImporter reads part of the first CAR and fails, as a daemon
// that refuses an import does.
type failingImporter struct{ err error }

func (f failingImporter) DagImport(_ context.Context, cars []io.Reader, _ bool) (map[cid.Cid]string, error) {
	io.CopyN(io.Discard, cars[0], 100)
	return nil, f.err
}

// TestImportDaemonFails: the importer's error comes back, and the
// builder, blocked on a pipe no one reads, is unblocked and waited for.
func TestImportDaemonFails(t *testing.T) {
	boom := errors.New("daemon refused")
	data := testData(8<<20, 5, nil)
	_, err := nardag.Import(context.Background(), failingImporter{boom}, func(put nardag.Sink) (cid.Cid, error) {
		return nardag.Build(context.Background(), bytes.NewReader(data), "nix-refs-4096-524288", nil, put)
	}, true)
	if !errors.Is(err, boom) {
		t.Fatalf("Import: %v, want the daemon's error", err)
	}
}

// TestPipe: bytes arrive in order whatever the write and read sizes, the
// writer's error follows them, and a reader that gives up unblocks the
// writer with its error.
func TestPipe(t *testing.T) {
	data := testData(3<<20+7, 6, nil)
	p := nardag.NewPipe(4, 1000)
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewSource(1))
		for b := data; len(b) > 0; {
			n := min(len(b), 1+rng.Intn(5000))
			if _, err := p.Write(b[:n]); err != nil {
				done <- err
				return
			}
			b = b[n:]
		}
		p.CloseWrite(nil)
		done <- nil
	}()
	got, err := io.ReadAll(&trickle{b: nil, rng: nil}) // empty: EOF at once
	if err != nil || len(got) != 0 {
		t.Fatal(err)
	}
	got, err = io.ReadAll(p)
	if err != nil || !bytes.Equal(got, data) || <-done != nil {
		t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(data))
	}

	boom := errors.New("boom")
	p = nardag.NewPipe(2, 10)
	p.CloseRead(boom)
	if _, err := p.Write(make([]byte, 100)); err != boom {
		t.Errorf("write after the reader gave up: %v", err)
	}
	p = nardag.NewPipe(2, 10)
	p.Write([]byte("abc"))
	p.CloseWrite(boom)
	if b, err := io.ReadAll(p); string(b) != "abc" || err != boom {
		t.Errorf("read %q, %v", b, err)
	}
}

// unpinningImporter takes every block and reports no root pinned, as a
// daemon shutting down in the middle of an import does.
type unpinningImporter struct{}

func (unpinningImporter) DagImport(_ context.Context, cars []io.Reader, _ bool) (map[cid.Cid]string, error) {
	for _, r := range cars {
		io.Copy(io.Discard, r)
	}
	return map[cid.Cid]string{}, nil
}

// TestImportRootNotPinnedIsTransient: a daemon that took the blocks but
// did not pin the root (it was shutting down: "pinner closed") fails the
// import as Transient, so a kubo outage is retried without limit.
func TestImportRootNotPinnedIsTransient(t *testing.T) {
	data := testData(1<<20, 2, nil)
	_, err := nardag.Import(context.Background(), unpinningImporter{}, func(put nardag.Sink) (cid.Cid, error) {
		return nardag.Build(context.Background(), bytes.NewReader(data), "nix-refs-4096-524288", nil, put)
	}, true)
	if err == nil || !errs.Is(err, errs.Transient) {
		t.Fatalf("Import with the root unpinned = %v (kind %v), want a Transient error", err, errs.KindOf(err))
	}
}
