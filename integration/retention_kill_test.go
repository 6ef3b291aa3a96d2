package integration

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// TestRetentionPruneSIGKILL: the prune binary is killed with SIGKILL at
// random moments over a cache of about 3,000 paths (twelve generations
// sharing a chain of dependencies), and run again each time until one run
// finishes. A checker reading the cache all through never sees a narinfo
// whose NAR is missing. At the end every kept path is whole, every other
// path has left the cache and has its "retired" event, the prune journal
// is empty, and one more prune finds nothing to do.
func TestRetentionPruneSIGKILL(t *testing.T) {
	bin := testenv.Binaries(t)
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if err := synthcache.Init(dir); err != nil {
		t.Fatal(err)
	}
	const gens = 12
	paths := map[string]synthcache.Path{}
	var tops []string
	old := time.Now().Add(-72 * time.Hour)
	for g := 0; g < gens; g++ {
		ps := synthcache.Generation("killset", g, 40, 240, 2048)
		for _, p := range ps {
			if _, ok := paths[p.StorePath]; ok {
				continue
			}
			if _, err := synthcache.Write(dir, p, old); err != nil {
				t.Fatal(err)
			}
			paths[p.StorePath] = p
		}
		top := ps[len(ps)-1].StorePath
		tops = append(tops, top)
		ev := &events.Built{Header: events.Header{Time: old.Add(time.Duration(g) * time.Minute)}, Host: "a", StoreDir: "/nix/store", OutPaths: []string{top}}
		events.Seal(ev)
		if _, err := events.Publish(ctx, js, events.SubjectBuilt, ev); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"NIX_IPFS_NATS_URL=" + n.URL, "NIX_IPFS_LOG_LEVEL=warn"}
	mirMustRun(t, bin, env, "pin", "add", "keep-me", tops[4], "--cache-dir", dir)
	kept := map[string]bool{}
	var walk func(string)
	walk = func(sp string) {
		if kept[sp] {
			return
		}
		kept[sp] = true
		for _, r := range paths[sp].Refs {
			walk(r)
		}
	}
	for _, r := range []string{tops[gens-1], tops[gens-2], tops[4]} {
		walk(r)
	}

	checker := startCacheChecker(t, dir, 2*time.Millisecond)
	args := []string{"prune", "--cache-dir", dir, "--keep-for", "0s", "--grace", "0s", "--keep-last-per-job", "2", "--kubo-api", "none"}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	kills, midRetire, finished := 0, 0, false
	for attempt := 0; attempt < 60 && !finished; attempt++ {
		cmd := exec.Command(filepath.Join(bin, "nix-ipfs"), args...)
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		// Kills alternate: at a random moment once retirements are under
		// way (the journal has entries: moving narinfos, removing NARs,
		// announcing), then at random in start-up and reading. The first
		// waits for the journal: a prune of these paths can finish within
		// the random window, and a run that finishes ends the loop.
		var kill <-chan time.Time
		switch {
		case kills < 12 && kills%2 == 1:
			kill = time.After(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		case kills < 12:
			k := make(chan time.Time, 1)
			kill = k
			go func() {
				for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if j, _ := os.ReadDir(filepath.Join(dir, ".nix-ipfs", "retiring")); len(j) > 0 {
						time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
						k <- time.Now()
						return
					}
				}
			}()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("prune failed: %v", err)
			}
			finished = true
		case <-kill:
			cmd.Process.Signal(syscall.SIGKILL)
			if err := <-done; err == nil {
				finished = true // it finished just before the signal
				break
			}
			kills++
			if j, _ := os.ReadDir(filepath.Join(dir, ".nix-ipfs", "retiring")); len(j) > 0 {
				midRetire++ // killed with retirements under way
			}
		}
	}
	if !finished {
		t.Fatalf("prune never finished in %d runs", kills)
	}
	checker.Stop()
	for _, p := range checker.Problems() {
		t.Errorf("checker saw during prune: %s", p)
	}
	var keptList []string
	for sp := range kept {
		keptList = append(keptList, sp)
	}
	_, bad := checkCache(dir, keptList)
	if len(bad) > 0 {
		t.Errorf("kept paths damaged: %q", bad[:min(len(bad), 10)])
	}
	retiredEv := map[string]bool{}
	for _, e := range streamEvents(t, js, events.SubjectRetired) {
		retiredEv[e.(*events.Retired).StorePath] = true
	}
	gone := 0
	for sp := range paths {
		if kept[sp] {
			continue
		}
		gone++
		if _, err := os.Stat(filepath.Join(dir, storepath.HashPart(sp)+".narinfo")); err == nil {
			t.Errorf("unkept %s still in the cache", sp)
		}
		if !retiredEv[sp] {
			t.Errorf("no retired event for %s", sp)
		}
	}
	nars, _ := os.ReadDir(filepath.Join(dir, "nar"))
	if len(nars) != len(kept) {
		t.Errorf("%d NARs left, want %d (one per kept path)", len(nars), len(kept))
	}
	if left, _ := os.ReadDir(filepath.Join(dir, ".nix-ipfs", "retiring")); len(left) != 0 {
		t.Errorf("prune journal not empty: %d entries", len(left))
	}
	out, _ := mirMustRun(t, bin, env, append(args, "--dry-run")...)
	if want := "would retire: 0 paths"; !strings.Contains(out, want) {
		t.Errorf("a prune after convergence: %s", out)
	}
	if midRetire == 0 {
		t.Errorf("no kill landed while retirements were under way (%d kills): the test proved less than it says", kills)
	}
	t.Logf("%d paths, %d kept, %d retired; %d kills before a run finished, %d with retirements under way; checker: %d scans, %d narinfos read",
		len(paths), len(kept), gone, kills, midRetire, checker.scans.Load(), checker.seen.Load())
	reliability(t, "prune-sigkill", "runs", kills+1, "in", len(paths), "out", len(kept), "retired", gone, "mid_retire", midRetire,
		"torn_seen", len(checker.Problems()), "lost", len(bad))
}
