// Package chunkstudy measures, per chunker, what a client that holds one
// generation of a closure must move to get the next: issue 22's figure
// for choosing the publisher's chunker with data.
//
// Each NAR is turned into the UnixFS DAG the publisher would get from kubo
// (`ipfs add --cid-version=1 --chunker=X`: raw leaves, SHA-256, a balanced
// DAG of 174 links per node), in process with boxo's importer and without
// any daemon, so that a dozen chunkers cost seconds. A client that holds
// generation 1's blocks moves, for generation 2, every block of generation
// 2's new paths (leaves and inner nodes alike) that generation 1 lacks;
// over HTTP it moves their NARs whole.
//
// Chunkers are kubo's specs ("buzhash", "size-N", "rabin-MIN-AVG-MAX"),
// the publisher's reference-aware chunker ("nix-refs-GAP-SIZE", package
// nardag), the prototype "refs+<spec>" or "refs/GAP+<spec>" (RefSplitter),
// which cuts around store path hashes with any inner chunker (the bytes
// in memory), and any of these prefixed "inline+"
// (kubo's --inline: blocks of 32 bytes or less inlined in their parent).
// docs/CHUNKING.md has the figures.
package chunkstudy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-cidutil"

	"github.com/nix-ipfs/nix-ipfs/nar"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Chunkers are the ones issue 22 asks to compare: today's default
// (buzhash), fixed sizes, rabin at smaller averages, and the
// reference-aware prototype over some of them.
var Chunkers = []string{
	"buzhash",
	"size-262144",
	"size-65536",
	"size-16384",
	"rabin-16384-65536-131072",
	"rabin-4096-16384-65536",
	"rabin-2048-8192-32768",
	"refs+buzhash",
	"refs+size-262144",
	"refs+size-65536",
	"refs+rabin-16384-65536-131072",
	"refs+rabin-4096-16384-65536",
	"inline+refs+buzhash",
	"inline+refs+size-262144",
	"refs/4096+buzhash",
	"refs/4096+size-262144",
	"refs/16384+buzhash",
	"refs/4096+size-524288",
	"refs/4096+size-1048576",
	"refs/16384+size-524288",
	"nix-refs-4096-524288", // the publisher's default: refs/4096+size-524288, streamed
}

// Path is one store path of a generation.
type Path struct {
	StorePath string
	// Refs are the store paths it references (itself or not).
	Refs []string
	// NAR returns its NAR serialisation; nil means nar.DumpPath of
	// StorePath.
	NAR func() ([]byte, error)
}

func (p Path) nar() ([]byte, error) {
	if p.NAR != nil {
		return p.NAR()
	}
	var b bytes.Buffer
	if err := nar.DumpPath(&b, p.StorePath); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// hashes are the hash parts a reference-aware chunker cuts around.
func (p Path) hashes() []string {
	out := []string{storepath.HashPart(p.StorePath)}
	for _, r := range p.Refs {
		out = append(out, storepath.HashPart(r))
	}
	return out
}

// Result is one chunker's figures for one upgrade.
type Result struct {
	Chunker string
	// NAR bytes of generation 1, of generation 2, and of generation 2's
	// paths that generation 1 lacks (what HTTP moves).
	Gen1NAR, Gen2NAR, NewNAR int64
	// Moved is the bytes of the blocks of generation 2's new paths that
	// are not blocks of generation 1 (each block once); MovedBlocks how
	// many.
	Moved       int64
	MovedBlocks int
	// MovedInner is the part of Moved in inner (dag-pb) nodes: the links
	// above changed leaves, which change with them.
	MovedInner int64
	// Blocks2 is how many distinct blocks generation 2 has.
	Blocks2 int
	// Repo1 is the bytes of generation 1's distinct blocks, Repo12 of
	// both generations': a mirror's repository before and after
	// generation 2 lands.
	Repo1, Repo12 int64
	// Took is the time to chunk and hash generation 2's NARs (already in
	// memory), on one goroutine.
	Took time.Duration
}

// MovedRatio is Moved ÷ NewNAR (HTTP: 1).
func (r Result) MovedRatio() float64 { return ratio(r.Moved, r.NewNAR) }

// BlocksPerGiB is generation 2's distinct blocks per GiB of its NARs.
func (r Result) BlocksPerGiB() float64 {
	return float64(r.Blocks2) / (float64(r.Gen2NAR) / (1 << 30))
}

// RepoGrowth is a mirror's repository holding both generations ÷ the
// same holding generation 1 only (issue 22 aims at 1.15 or less).
func (r Result) RepoGrowth() float64 { return ratio(r.Repo12, r.Repo1) }

// MBps is the chunk-and-hash speed in MB/s (10^6 bytes) of NAR.
func (r Result) MBps() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Gen2NAR) / 1e6 / r.Took.Seconds()
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Compare measures each chunker on the upgrade from gen1 to gen2. NARs are
// read once per chunker and path, so memory holds one NAR at a time.
func Compare(ctx context.Context, gen1, gen2 []Path, chunkers []string) ([]Result, error) {
	var out []Result
	for _, ch := range chunkers {
		r, err := compareOne(ctx, gen1, gen2, ch)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func compareOne(ctx context.Context, gen1, gen2 []Path, ch string) (Result, error) {
	r := Result{Chunker: ch}
	old := map[string]bool{}
	s1 := blockSet{}
	for _, p := range gen1 {
		old[p.StorePath] = true
		n, _, err := addPath(ctx, p, ch, s1.add)
		if err != nil {
			return r, err
		}
		r.Gen1NAR += n
	}
	r.Repo1 = s1.bytes()
	s2, fresh := blockSet{}, blockSet{}
	for _, p := range gen2 {
		add := s2.add
		if !old[p.StorePath] {
			// fresh holds the blocks of the paths the client lacks.
			add = func(c cid.Cid, n int) { s2.add(c, n); fresh.add(c, n) }
		}
		n, took, err := addPath(ctx, p, ch, add)
		if err != nil {
			return r, err
		}
		r.Gen2NAR += n
		r.Took += took
		if !old[p.StorePath] {
			r.NewNAR += n
		}
	}
	r.Blocks2 = len(s2)
	r.Repo12 = r.Repo1
	for k, sz := range s2 {
		if _, ok := s1[k]; !ok {
			r.Repo12 += int64(sz)
		}
	}
	for k, sz := range fresh {
		if _, ok := s1[k]; !ok {
			r.Moved += int64(sz)
			r.MovedBlocks++
			if c, err := cid.Cast([]byte(k)); err == nil && c.Type() == cid.DagProtobuf {
				r.MovedInner += int64(sz)
			}
		}
	}
	return r, nil
}

// blockSet is distinct blocks by CID, with their sizes.
type blockSet map[string]int

func (s blockSet) add(c cid.Cid, size int) { s[c.KeyString()] = size }

func (s blockSet) bytes() int64 {
	var n int64
	for _, sz := range s {
		n += int64(sz)
	}
	return n
}

// addPath builds p's DAG with chunker ch, records its blocks and returns
// its NAR size and the time chunking and hashing took.
func addPath(ctx context.Context, p Path, ch string, add func(cid.Cid, int)) (int64, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	data, err := p.nar()
	if err != nil {
		return 0, 0, fmt.Errorf("chunkstudy: NAR of %s: %w", p.StorePath, err)
	}
	start := time.Now()
	block := func(c cid.Cid, b []byte) { add(c, len(b)) }
	if _, err := DAG(ctx, bytes.NewReader(data), ch, p.hashes(), block); err != nil {
		return 0, 0, fmt.Errorf("chunkstudy: %s with %s: %w", p.StorePath, ch, err)
	}
	return int64(len(data)), time.Since(start), nil
}

// InlinePrefix marks a chunker whose blocks of InlineLimit bytes or less
// are inlined in their parent as identity CIDs (kubo's `ipfs add --inline
// --inline-limit=32`): "inline+refs+buzhash" puts each 32-byte hash block
// of the reference-aware chunker in its parent node, which changes with it
// anyway, so that a client fetches no block that small on its own.
const InlinePrefix = "inline+"

// InlineLimit is the largest block InlinePrefix inlines: kubo's default
// --inline-limit, and a store path hash's length.
const InlineLimit = 32

// DAG builds the UnixFS DAG of r with chunker spec as the publisher gets
// it (nardag.Layout: CIDv1, raw leaves, SHA-256, balanced, 174 links),
// calls block for every block made (not for inlined ones), and returns the
// root. hashes are the hash parts a "refs+" or nix-refs chunker cuts
// around.
func DAG(ctx context.Context, r io.Reader, spec string, hashes []string, block func(c cid.Cid, data []byte)) (cid.Cid, error) {
	var builder cid.Builder = nardag.Prefix
	if rest, ok := strings.CutPrefix(spec, InlinePrefix); ok {
		// kubo's --inline: the CID of a block this small is the block.
		builder, spec = cidutil.InlineBuilder{Builder: builder, Limit: InlineLimit}, rest
	}
	spl, err := splitter(r, spec, hashes)
	if err != nil {
		return cid.Undef, err
	}
	return nardag.Layout(ctx, spl, builder, func(c cid.Cid, b []byte) error { block(c, b); return nil })
}

// Closure lists top's closure with its references, through query (which
// runs `nix-store ARGS...` and returns its stdout): the Paths to Compare,
// their NARs dumped from the store when read.
func Closure(top string, query func(args ...string) (string, error)) ([]Path, error) {
	out, err := query("--query", "--requisites", top)
	if err != nil {
		return nil, err
	}
	var ps []Path
	for _, p := range strings.Fields(out) {
		refs, err := query("--query", "--references", p)
		if err != nil {
			return nil, err
		}
		ps = append(ps, Path{StorePath: p, Refs: strings.Fields(refs)})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].StorePath < ps[j].StorePath })
	return ps, nil
}

// Table writes results as a markdown table.
func Table(w io.Writer, rs []Result) {
	fmt.Fprintf(w, "| Chunker | moved ÷ new NAR | moved (inner nodes) | new NAR | blocks/GiB | repo after gen 2 ÷ after gen 1 | chunk+hash MB/s |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %.1f%% | %.2f MB (%.2f) | %.1f MB | %.0f | %.3f | %.0f |\n",
			r.Chunker, 100*r.MovedRatio(), float64(r.Moved)/1e6, float64(r.MovedInner)/1e6, float64(r.NewNAR)/1e6, r.BlocksPerGiB(), r.RepoGrowth(), r.MBps())
	}
}
