package chunkstudy

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/internal/upgradeload"
)

// TestStudy builds the upgrade workload with real Nix and prints every
// chunker's figures as a markdown table:
//
//	NIX_IPFS_STUDY_MB=200 go test ./internal/chunkstudy -run TestStudy -v
//
// Skipped without NIX_IPFS_STUDY_MB: it is a measurement (the bench makes
// it too), not a check. NIX_IPFS_STUDY_CHUNKERS, space-separated, narrows
// the chunkers.
func TestStudy(t *testing.T) {
	gens := studyGenerations(t)
	chunkers := Chunkers
	if s := os.Getenv("NIX_IPFS_STUDY_CHUNKERS"); s != "" {
		chunkers = strings.Fields(s)
	}
	rs, err := Compare(context.Background(), gens[0], gens[1], chunkers)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	Table(&b, rs)
	t.Logf("%d paths per generation, generation 2's NAR %.1f MB\n%s", len(gens[1]), float64(rs[0].Gen2NAR)/1e6, b.String())
}

// studyGenerations builds both generations of a workload of
// NIX_IPFS_STUDY_MB with real Nix (skipping the test without it).
func studyGenerations(t *testing.T) [2][]Path {
	mb, _ := strconv.Atoi(os.Getenv("NIX_IPFS_STUDY_MB"))
	if mb <= 0 {
		t.Skip("NIX_IPFS_STUDY_MB not set")
	}
	if err := upgradeload.CheckTools(); err != nil {
		t.Skip(err)
	}
	n := testenv.NewNix(t)
	plan, err := upgradeload.NewPlan(upgradeload.Config{Bytes: int64(mb) << 20, Nonce: testenv.Nonce()})
	if err != nil {
		t.Fatal(err)
	}
	files, bytes := plan.Files()
	t.Logf("%d files of this machine, %.1f MB; generation 2 patches %s and grows %s", files, float64(bytes)/1e6, plan.Patched(), plan.Grown())
	var gens [2][]Path
	for g := 1; g <= 2; g++ {
		expr, err := plan.Expr(g)
		if err != nil {
			t.Fatal(err)
		}
		top := n.Build(t, expr)[0]
		gens[g-1], err = Closure(top, func(args ...string) (string, error) { return n.Try("nix-store", args...) })
		if err != nil {
			t.Fatal(err)
		}
	}
	return gens
}
