package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/publisher"
)

// benchMFS: what keeping the cache as a UnixFS directory (publisher
// --mfs-dir) costs per path published, in a small directory and in one of
// 100,000 paths, and how many blocks each new root adds, which is what a
// mirror fetches per announcement: the figures behind the announce
// interval.
func benchMFS(b *Bench, s *scope, sec *Section) {
	sec.Title = "10. The cache as an IPFS directory (--mfs-dir)"
	ctx := b.ctx
	small, large, adds := 1000, 100000, 30
	if b.quick {
		small, large, adds = 200, 2000, 10
	}
	k := testenv.StartKubo(s, testenv.KuboOffline())
	type result struct {
		entries       int
		build         time.Duration
		add, stat     []time.Duration
		blocks1, blkN int
		pinAdd        time.Duration // pin the new root, the old one pinned, all blocks local
		pinUpdate     time.Duration // pin update old -> new
	}
	var res []result
	for i, n := range []int{small, large} {
		dir := fmt.Sprintf("/bench-%d", n)
		progress("mfs: a cache directory of %d paths", n)
		start := time.Now()
		root := buildCacheDir(b, s, k, n)
		k.IPFS(s, "files", "cp", "/ipfs/"+root, dir)
		r := result{entries: n, build: time.Since(start)}
		m, err := publisher.NewMFSCache(k.Client, dir, "/nix/store", "bench", nil)
		s.check(err, "mfs cache")
		before := refsOf(s, k, root)
		for j := 0; j < adds; j++ {
			ni := benchNarinfo(b, s, k, fmt.Sprintf("mfs-%d-%d-%s", i, j, b.nonce))
			t0 := time.Now()
			s.check(m.Add(ctx, ni), "mfs add")
			r.add = append(r.add, time.Since(t0))
			t0 = time.Now()
			c, err := k.Client.FilesStat(ctx, dir)
			s.check(err, "files stat")
			r.stat = append(r.stat, time.Since(t0))
			if j == 0 {
				r.blocks1 = newBlocks(before, refsOf(s, k, c.String()))
			}
			if j == adds-1 {
				r.blkN = newBlocks(before, refsOf(s, k, c.String()))
			}
		}
		// What a mirror does per announcement, blocks all local: pin the
		// new root while the old one is pinned (a walk of the DAG), against
		// kubo's pin update (a diff of the two).
		last, err := k.Client.FilesStat(ctx, dir)
		s.check(err, "files stat")
		env := []string{"IPFS_PATH=" + k.Repo}
		s.run(ctx, env, "ipfs", "pin", "add", "--progress=false", root)
		t0 := time.Now()
		s.run(ctx, env, "ipfs", "pin", "add", "--progress=false", last.String())
		r.pinAdd = time.Since(t0)
		s.run(ctx, env, "ipfs", "pin", "rm", last.String())
		t0 = time.Now()
		s.run(ctx, env, "ipfs", "pin", "update", root, last.String())
		r.pinUpdate = time.Since(t0)
		s.run(ctx, env, "ipfs", "pin", "rm", last.String())
		k.IPFS(s, "files", "rm", "-r", dir)
		res = append(res, r)
	}
	for _, r := range res {
		sec.add(Row{What: fmt.Sprintf("MFS: add one path to a directory of %d paths (median)", r.entries), Ratio: nan,
			Ours: fmtDur(medianDur(r.add)), Base: "p90 " + fmtDur(percentile(r.add, 90))})
	}
	sec.detailf("A kubo daemon (offline) holds a cache directory of N paths as `--mfs-dir` lays it out: N `<hash>.narinfo` files of about 500 bytes and N links under `nar/` (kubo shards both directories, HAMT). "+
		"It is built once with `ipfs add -r` and `ipfs files cp` (the build time below is that set-up, not a publisher cost). Then the publisher's own code (`publisher.MFSCache.Add`: link the NAR's CID, write the narinfo, each flushed to the MFS root) adds %d new paths one after the other through the RPC API, "+
		"and after each `files stat` reads the root that would be announced. New blocks: blocks reachable from the root after the adds that were not before (`ipfs refs -r --unique`), i.e. what a mirror that pinned the old root fetches to pin the new one.\n\n", adds)
	sec.detailf("| Paths in the directory | set-up | add one path: median | p90 | root stat: median | new blocks after 1 add | after %d adds | pin new root (old pinned) | pin update old→new |\n|---|---|---|---|---|---|---|---|---|\n", adds)
	for _, r := range res {
		sec.detailf("| %d | %s | %s | %s | %s | %d | %d | %s | %s |\n", r.entries, fmtDur(r.build), fmtDur(medianDur(r.add)), fmtDur(percentile(r.add, 90)),
			fmtDur(medianDur(r.stat)), r.blocks1, r.blkN, fmtDur(r.pinAdd), fmtDur(r.pinUpdate))
	}
	sec.detailf("\nThe last two columns are a mirror's own cost per announcement with every block already local (one `ipfs pin` command each, so about 0.1 s of it is the CLI): `pin add` of the new root walks the whole DAG; `pin update` walks only what differs. "+
		"Each announcement is one small event on the stream and, on every mirror, one pin of the new root plus the new blocks above. "+
		"Announcing after every path would cost each mirror that walk per path; announcing every `--mfs-announce-every` (default %v) bounds it to a few per minute while a client sees a path in the directory at most that long after its narinfo.\n",
		publisher.DefaultMFSAnnounceEvery)
}

// buildCacheDir adds a directory of n narinfo-like files and n small NAR
// files under nar/ to k, and returns its CID.
func buildCacheDir(b *Bench, s *scope, k *testenv.Kubo, n int) string {
	dir := filepath.Join(s.TempDir(), "cache")
	s.check(os.MkdirAll(filepath.Join(dir, "nar"), 0o755), "mkdir")
	pad := strings.Repeat("x", 380)
	for i := 0; i < n; i++ {
		h := fmt.Sprintf("%032d", i)
		s.check(os.WriteFile(filepath.Join(dir, h+".narinfo"), []byte("StorePath: /nix/store/"+h+"-p\nURL: nar/"+h+".nar\n"+pad+"\n"), 0o644), "write")
		s.check(os.WriteFile(filepath.Join(dir, "nar", h+".nar"), []byte("nar "+h), 0o644), "write")
	}
	// Not k.IPFS: its time limit is for quick commands, and adding 2n
	// files takes minutes on a loaded machine.
	out := s.run(b.ctx, []string{"IPFS_PATH=" + k.Repo}, "ipfs", "add", "-r", "-Q", "--cid-version=1", "--raw-leaves", "--pin=false", dir)
	removeAll(dir)
	return strings.TrimSpace(out)
}

// benchNarinfo adds a small NAR to k and returns a narinfo naming it.
func benchNarinfo(b *Bench, s *scope, k *testenv.Kubo, name string) *narinfo.NarInfo {
	data := []byte("nar of " + name)
	c, err := k.Client.Add(b.ctx, bytes.NewReader(data), ipfs.DefaultParams(), false)
	s.check(err, "add NAR")
	h := nixbase32.EncodeToString(c.Hash()[len(c.Hash())-32:])
	hp := nixbase32.EncodeToString([]byte(name + "0123456789abcdefghij")[:20])
	return &narinfo.NarInfo{
		StorePath: "/nix/store/" + hp + "-" + name, URL: "nar/" + h + ".nar", Compression: "none",
		FileHash: "sha256:" + h, FileSize: uint64(len(data)), NarHash: "sha256:" + h, NarSize: uint64(len(data)),
		Sigs: []string{"bench-1:" + strings.Repeat("A", 86) + "=="}, IPFSHash: c.String(),
	}
}

// refsOf returns every block reachable from root.
func refsOf(s *scope, k *testenv.Kubo, root string) map[string]bool {
	out := s.run(context.Background(), []string{"IPFS_PATH=" + k.Repo}, "ipfs", "refs", "-r", "--unique", root)
	set := map[string]bool{root: true}
	for _, l := range strings.Fields(out) {
		set[l] = true
	}
	return set
}

func newBlocks(before, after map[string]bool) int {
	n := 0
	for c := range after {
		if !before[c] {
			n++
		}
	}
	return n
}
