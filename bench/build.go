package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// The workloads are built with real nix-build from derivations that need no
// nixpkgs (builder /bin/sh, PATH=/usr/bin:/bin), each name carrying the
// run's nonce so the paths are fresh; each is built once per run and
// reused by every round.

// buildOnce nix-builds expr once per run under key and returns its outputs.
func (b *Bench) buildOnce(s *scope, key, what, expr string) []string {
	if p, ok := b.data[key]; ok {
		return p
	}
	progress("building %s", what)
	start := time.Now()
	outs, err := b.nix.TryBuild(expr, "--max-jobs", "2")
	s.check(err, "build "+what)
	b.built = append(b.built, outs...)
	b.data[key] = outs
	progress("built %s in %s", what, time.Since(start).Round(100*time.Millisecond))
	return outs
}

// closure returns the publish workload: a top path referring to parts
// paths of many small files, and the top path first.
func (b *Bench) closure(s *scope) (top string, all []string) {
	return b.closureSized(s, "closure", b.sz.parts, b.sz.partBytes)
}

// closureSized is a closure like the publish workload's, of parts paths of
// partBytes each, built once per run under key.
func (b *Bench) closureSized(s *scope, key string, nparts int, partBytes int64) (top string, all []string) {
	// A mix like a real package's: many small files, fewer large ones.
	part := func(i int) string {
		return testenv.Drv(fmt.Sprintf("bench-%s-files-%d-%s", key, i, b.nonce), fmt.Sprintf(`
P=%d
gen() {
  mkdir -p $out/$1
  head -c $3 /dev/urandom | split -b $2 -a 5 - $out/$1/f
}
gen small 1024 $((P / 32))
gen medium 8192 $((P * 3 / 32))
gen large 65536 $((P / 4))
gen huge 1048576 $((P * 5 / 8))`, partBytes), "")
	}
	var parts []string
	for i := 0; i < nparts; i++ {
		parts = append(parts, "("+part(i)+")")
	}
	expr := testenv.Drv("bench-"+key+"-"+b.nonce, `mkdir -p $out; for p in $parts; do echo $p; done > $out/parts`,
		"parts = [\n"+strings.Join(parts, "\n")+"\n];")
	top = b.buildOnce(s, key, fmt.Sprintf("the %s (%d paths of %s of small files)", key, nparts, fmtBytes(partBytes)), expr)[0]
	if all, ok := b.data[key+"-all"]; ok {
		return top, all
	}
	all, err := b.db.Closure(b.ctx, []string{top})
	s.check(err, "closure of "+top)
	b.data[key+"-all"] = all
	for _, p := range all {
		if p != top {
			b.built = append(b.built, p)
		}
	}
	return top, all
}

// big returns the one big path.
func (b *Bench) big(s *scope) string {
	expr := testenv.Drv("bench-big-"+b.nonce, fmt.Sprintf(`mkdir -p $out; head -c %d /dev/urandom > $out/blob`, b.sz.bigBytes), "")
	return b.buildOnce(s, "big", "the big path ("+fmtBytes(b.sz.bigBytes)+")", expr)[0]
}

// smallPaths returns n small independent paths (4 to 64 KiB each).
func (b *Bench) smallPaths(s *scope, n int) []string {
	var items []string
	for i := 0; i < n; i++ {
		size := 4096 + (i*7919)%61440
		items = append(items, "("+testenv.Drv(fmt.Sprintf("bench-small-%d-%s", i, b.nonce),
			fmt.Sprintf("head -c %d /dev/urandom > $out", size), "")+")")
	}
	return b.buildOnce(s, fmt.Sprintf("small-%d", n), fmt.Sprintf("%d small paths", n), "[\n"+strings.Join(items, "\n")+"\n]")
}

// narSize returns the total NAR size of paths, as the Nix database records it.
func (b *Bench) narSize(s *scope, paths []string) int64 {
	var n int64
	for _, p := range paths {
		info, err := b.db.QueryPathInfo(b.ctx, p)
		s.check(err, "path info of "+p)
		n += int64(info.NarSize)
	}
	return n
}

// dedupVersions writes a package of about total bytes in many files, from
// a fixed seed so every run measures the same bytes, and adds three
// versions of it to the store with nix-store --add: v1, v2 with one small
// file changed in place (same length), v3 with that file 1000 bytes longer.
// The file sits in the middle of the NAR's order (entries are sorted by
// name), so about half the package follows it.
func (b *Bench) dedupVersions(s *scope, total int64) (paths [3]string, changed string) {
	if p, ok := b.data["dedup"]; ok {
		return [3]string{p[0], p[1], p[2]}, p[3]
	}
	progress("writing and adding the dedup package (%s, 3 versions)", fmtBytes(total))
	dir := s.TempDir()
	base := filepath.Join(dir, "v1", "bench-pkg")
	rng := rand.New(rand.NewPCG(7, 11))
	content := rand.NewChaCha8([32]byte{'n', 'i', 'x', '-', 'i', 'p', 'f', 's'})
	const dirs = 16
	var written int64
	for i := 0; written < total; i++ {
		var size int64
		switch r := rng.IntN(100); {
		case r < 70:
			size = 1024 + rng.Int64N(15*1024)
		case r < 95:
			size = 16*1024 + rng.Int64N(240*1024)
		default:
			size = 256*1024 + rng.Int64N(4*1024*1024)
		}
		size = min(size, total-written)
		p := filepath.Join(base, fmt.Sprintf("d%02d", i%dirs), fmt.Sprintf("f%05d", i))
		buf := make([]byte, size)
		content.Read(buf)
		s.check(os.MkdirAll(filepath.Dir(p), 0o755), "mkdir")
		s.check(os.WriteFile(p, buf, 0o644), "write")
		written += size
	}
	changed = fmt.Sprintf("d%02d/config", dirs/2)
	version := []byte("version = 1.0.0\nbuild = 0001\n")
	s.check(os.WriteFile(filepath.Join(base, changed), version, 0o644), "write")

	v2 := filepath.Join(dir, "v2", "bench-pkg")
	v3 := filepath.Join(dir, "v3", "bench-pkg")
	for _, d := range []string{v2, v3} {
		s.check(os.MkdirAll(filepath.Dir(d), 0o755), "mkdir")
		s.run(b.ctx, nil, "cp", "-a", base, d)
	}
	s.check(os.WriteFile(filepath.Join(v2, changed), []byte("version = 1.0.1\nbuild = 0002\n"), 0o644), "write")
	longer := append([]byte("version = 1.0.1\nbuild = 0002\n"), []byte(strings.Repeat("# changelog line\n", 1000/17+1))[:1000]...)
	s.check(os.WriteFile(filepath.Join(v3, changed), longer, 0o644), "write")

	for i, d := range []string{base, v2, v3} {
		out := s.run(b.ctx, nil, "nix-store", "--add", d)
		paths[i] = strings.TrimSpace(out)
	}
	b.built = append(b.built, paths[:]...)
	b.data["dedup"] = []string{paths[0], paths[1], paths[2], changed}
	removeAll(dir)
	return paths, changed
}
