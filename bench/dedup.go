package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// dedupChunkers are the chunkers compared: kubo's default fixed size, and
// the two content-defined ones kubo has.
var dedupChunkers = []string{"size-262144", "buzhash", "rabin"}

// benchDedup: bytes a mirror stores for two versions of a package that
// differ in one small file, per chunker.
func benchDedup(b *Bench, s *scope, sec *Section) {
	sec.Title = "5. Deduplication"
	ctx := b.ctx
	paths, changed := b.dedupVersions(s, b.sz.dedupBytes)
	var nar [3]int64
	for i, p := range paths {
		nar[i] = b.narSize(s, []string{p})
	}
	type result struct {
		pair12, pair13 int64 // unique bytes of the two DAGs (ipfs dag stat)
		repo12         int64 // growth of B's repository pinning v1 and v2
	}
	res := map[string]result{}
	for _, ch := range dedupChunkers {
		progress("dedup: %s", ch)
		err := runScope("dedup/"+ch, func(s *scope) {
			a := b.newHostA(s)
			b.startPublisher(s, a, "--chunker="+ch)
			b.publishBuilt(s, a.js, paths[:])
			cids := b.waitNarinfos(s, a.cache, paths[:], pubTimeout, 20*time.Millisecond, a.pub)
			kb := testenv.StartKubo(s)
			self, err := a.kubo.Client.Self(ctx)
			s.check(err, "kubo A identity")
			s.check(kb.Client.Connect(ctx, self), "connect B to A")
			pin := func(p string) {
				c, err := cid.Decode(cids[p])
				s.check(err, "CID")
				s.check(kb.Client.Pin(ctx, c, filepath.Base(p)), "pin on B")
			}
			r0 := repoSize(s, kb)
			pin(paths[0])
			pin(paths[1])
			var r result
			r.repo12 = repoSize(s, kb) - r0
			pin(paths[2])
			r.pair12 = dagStat(s, kb, cids[paths[0]], cids[paths[1]])
			r.pair13 = dagStat(s, kb, cids[paths[0]], cids[paths[2]])
			res[ch] = r
		})
		if err != nil {
			s.Fatalf("%s: %v", ch, err)
		}
	}

	sum12, sum13 := nar[0]+nar[1], nar[0]+nar[2]
	for _, ch := range dedupChunkers {
		r := res[ch]
		sec.add(Row{What: fmt.Sprintf("Dedup, %s, one file edited in place: stored ÷ sum of NARs", ch),
			Ratio: nan, RatioText: fmt.Sprintf("%.3f", float64(r.pair12)/float64(sum12)), Ours: fmtBytes(r.pair12), Base: fmtBytes(sum12)})
		sec.add(Row{What: fmt.Sprintf("Dedup, %s, one file grown by 1000 bytes: stored ÷ sum of NARs", ch),
			Ratio: nan, RatioText: fmt.Sprintf("%.3f", float64(r.pair13)/float64(sum13)), Ours: fmtBytes(r.pair13), Base: fmtBytes(sum13)})
	}
	sec.detailf("A package of %s in many files (70%% of them 1-16 KiB, 25%% 16-256 KiB, 5%% 256 KiB-4 MiB; pseudo-random bytes from a fixed seed, so every run measures the same bytes) added to the store three times with `nix-store --add`: "+
		"v1; v2 with the small file `%s` edited in place (same length); v3 with that file 1000 bytes longer. NAR entries are sorted by name, so about half the package follows the file in the NAR. "+
		"For each chunker the real publisher (`--chunker`) publishes the three versions into a fresh kubo A, a fresh kubo B pins all three CIDs, and `ipfs dag stat` on B gives the unique bytes of each pair of DAGs (blocks shared by both counted once). "+
		"A ratio of 0.50 means the second version cost nothing; 1.00 means nothing was shared.\n\n", fmtBytes(b.sz.dedupBytes), changed)
	sec.detailf("| Chunker | v1+v2 stored | ratio | v1+v3 stored | ratio | B's repo growth for v1+v2 (`ipfs repo stat`) |\n|---|---|---|---|---|---|\n")
	for _, ch := range dedupChunkers {
		r := res[ch]
		sec.detailf("| %s | %s | %.3f | %s | %.3f | %s |\n", ch, fmtBytes(r.pair12), float64(r.pair12)/float64(sum12),
			fmtBytes(r.pair13), float64(r.pair13)/float64(sum13), fmtBytes(r.repo12))
	}
	sec.detailf("\nNAR sizes: v1 %d, v2 %d, v3 %d bytes.\n", nar[0], nar[1], nar[2])
}

func repoSize(s *scope, k *testenv.Kubo) int64 {
	var st struct{ RepoSize int64 }
	s.check(json.Unmarshal([]byte(k.IPFS(s, "repo", "stat", "--enc=json")), &st), "repo stat")
	return st.RepoSize
}

// dagStat returns the unique bytes of the DAGs under roots.
func dagStat(s *scope, k *testenv.Kubo, roots ...string) int64 {
	var st struct{ TotalSize int64 }
	out := k.IPFS(s, append([]string{"dag", "stat", "--progress=false", "--enc=json"}, roots...)...)
	s.check(json.Unmarshal([]byte(strings.TrimSpace(out)), &st), "dag stat")
	return st.TotalSize
}
