package chunkstudy

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

// testData is pseudo-random bytes with store path hashes at intervals, as
// in a NAR of binaries with a RUNPATH.
func testData(size int, hashes []string, seed int64) []byte {
	rng := rand.New(rand.NewSource(seed))
	b := make([]byte, size)
	rng.Read(b)
	for i, off := 0, 1000; off+HashLen < size; i, off = i+1, off+size/7 {
		copy(b[off:], "/nix/store/"+hashes[i%len(hashes)]+"-name")
	}
	return b
}

var (
	hashA = "0123456789abcdfghijklmnpqrsvwxyz"
	hashB = "zyxwvsrqpnmlkjihgfdcba9876543210"
)

func TestRefSplitterCutsAroundHashes(t *testing.T) {
	data := testData(3<<20, []string{hashA, hashB}, 1)
	s, err := NewRefSplitter(bytes.NewReader(data), "buzhash", []string{hashA, hashB})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	hashes := 0
	for {
		b, err := s.NextBytes()
		if err != nil {
			break
		}
		if string(b) == hashA || string(b) == hashB {
			hashes++
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("chunks do not concatenate to the input")
	}
	if hashes != 7 {
		t.Errorf("%d hashes as blocks of their own, want 7", hashes)
	}
}

// TestOneHashChangedMovesLittle: the same bytes with one hash replaced
// (same length) move one 32-byte leaf and the inner nodes above it with
// refs+, a whole chunk and more without.
func TestOneHashChangedMovesLittle(t *testing.T) {
	hashC := strings.Repeat("c", HashLen)
	d1 := testData(4<<20, []string{hashA}, 2)
	d2 := bytes.ReplaceAll(d1, []byte(hashA), []byte(hashC))
	gen1 := []Path{{StorePath: "/nix/store/" + hashA + "-x", NAR: func() ([]byte, error) { return d1, nil }}}
	gen2 := []Path{{StorePath: "/nix/store/" + hashC + "-x", NAR: func() ([]byte, error) { return d2, nil }}}
	rs, err := Compare(context.Background(), gen1, gen2, []string{"buzhash", "refs+buzhash"})
	if err != nil {
		t.Fatal(err)
	}
	plain, refs := rs[0], rs[1]
	t.Logf("buzhash moved %d (%.2f%%), refs+buzhash %d (%.3f%%)", plain.Moved, 100*plain.MovedRatio(), refs.Moved, 100*refs.MovedRatio())
	if refs.NewNAR != int64(len(d2)) || refs.Gen2NAR != int64(len(d2)) {
		t.Errorf("new NAR %d, gen 2 NAR %d, want %d", refs.NewNAR, refs.Gen2NAR, len(d2))
	}
	if refs.Moved > 4000 { // one 32-byte leaf and a root of a few dozen links
		t.Errorf("refs+buzhash moved %d bytes for one 32-byte hash changed 7 times", refs.Moved)
	}
	if plain.Moved < 128<<10 {
		t.Errorf("buzhash moved %d bytes, less than one chunk", plain.Moved)
	}
}

// TestDAGMatchesKubo: with inlining (the study's own builder), the
// in-process DAG's root is the CID kubo's `ipfs add --cid-version=1
// --inline --chunker=X` gives the same bytes, so that the figures are
// kubo's.
func TestDAGMatchesKubo(t *testing.T) {
	ipfs, err := exec.LookPath("ipfs")
	if err != nil {
		t.Skip("no ipfs on PATH")
	}
	repo := t.TempDir()
	env := append(os.Environ(), "IPFS_PATH="+repo)
	if out, err := (&exec.Cmd{Path: ipfs, Args: []string{"ipfs", "init", "--profile=test"}, Env: env}).CombinedOutput(); err != nil {
		t.Fatalf("ipfs init: %v\n%s", err, out)
	}
	// 20 bytes past a multiple of every fixed size: a last chunk to inline.
	data := testData(5<<20+20, []string{hashA}, 3)
	f := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// kubo's chunkers themselves: nardag's TestBuildMatchesKubo.
	for _, ch := range []string{"inline+size-262144", "inline+buzhash"} {
		args := []string{"ipfs", "add", "--offline", "--only-hash", "-Q", "--cid-version=1"}
		if rest, ok := strings.CutPrefix(ch, InlinePrefix); ok {
			args = append(args, "--inline", "--inline-limit=32", "--chunker="+rest)
		} else {
			args = append(args, "--chunker="+ch)
		}
		out, err := (&exec.Cmd{Path: ipfs, Args: append(args, f), Env: env}).CombinedOutput()
		if err != nil {
			t.Fatalf("ipfs add: %v\n%s", err, out)
		}
		root, err := DAG(context.Background(), bytes.NewReader(data), ch, nil, func(cid.Cid, []byte) {})
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(out)); root.String() != want {
			t.Errorf("%s: in process %s, kubo %s", ch, root, want)
		}
	}
}

func BenchmarkRefSplitter(b *testing.B) {
	data := testData(32<<20, []string{hashA, hashB}, 4)
	for _, ch := range []string{"buzhash", "refs+buzhash", "size-262144", "refs+size-262144"} {
		b.Run(ch, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if _, err := DAG(context.Background(), bytes.NewReader(data), ch, []string{hashA, hashB}, func(cid.Cid, []byte) {}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRefSplitterGapJoinsHashes: hashes closer than the gap, and the bytes
// between them, make one block.
func TestRefSplitterGapJoinsHashes(t *testing.T) {
	data := bytes.Repeat([]byte{'.'}, 10000)
	for _, off := range []int{1000, 1100, 1300, 8000} {
		copy(data[off:], hashA)
	}
	spl, err := splitter(bytes.NewReader(data), "refs/1000+size-262144", []string{hashA})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for {
		b, err := spl.NextBytes()
		if err != nil {
			break
		}
		sizes = append(sizes, len(b))
	}
	want := []int{1000, 1300 + HashLen - 1000, 8000 - 1300 - HashLen, HashLen, 10000 - 8000 - HashLen}
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("chunks %v, want %v", sizes, want)
	}
	for _, bad := range []string{"refs", "refs/x+buzhash", "refs4096+buzhash", "refs+nonsense"} {
		if _, err := splitter(bytes.NewReader(data), bad, nil); err == nil {
			t.Errorf("chunker %q accepted", bad)
		}
	}
}
