package integration

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestFaultPublisherSIGKILL: the publisher binary is killed with SIGKILL at
// random moments while it publishes more than 200 paths of mixed sizes, and
// restarted each time. A checker scanning the cache every few milliseconds
// the whole time never sees a narinfo that does not parse, whose NAR is
// missing or of another size, nor a NAR whose bytes do not match its name.
// Afterwards every path has its NAR, narinfo and a CID pinned on A, exactly
// one published event, and every built event is acked.
func TestFaultPublisherSIGKILL(t *testing.T) {
	a := newHostA(t, testenv.KuboOffline())
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	const drvs, outsPer = 21, 10
	extra, script := multiOutputs(outsPer, 768)
	outs := a.nix.Build(t, batchExpr("sigkill-"+testenv.Nonce(), drvs, script, extra))
	paths := allOutputs(t, a.nix, outs)
	if len(paths) != drvs*outsPer {
		t.Fatalf("%d paths built, want %d", len(paths), drvs*outsPer)
	}
	flushSpool(t, a.builder)

	checker := startCacheChecker(t, a.cache, 3*time.Millisecond)
	a.startPublisher(t, fastRecovery...)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	// At least minKills, even if publishing got far between them: the later
	// ones land in announcing and acking.
	const minKills, maxKills = 10, 30
	kills, midWrite := 0, 0
	deadline := time.Now().Add(4 * time.Minute)
	for kills < maxKills && (kills < minKills || countNarinfos(a.cache, paths) < len(paths)) {
		if time.Now().After(deadline) {
			t.Fatalf("after %d kills, %d of %d paths published", kills, countNarinfos(a.cache, paths), len(paths))
		}
		// A random moment: anywhere from the publisher's start-up to the
		// middle of a NAR, a kubo add or a narinfo write.
		time.Sleep(time.Duration(50+rng.IntN(950)) * time.Millisecond)
		a.pub.Signal(syscall.SIGKILL)
		if !a.pub.Wait(30 * time.Second) {
			t.Fatal("publisher did not die of SIGKILL")
		}
		kills++
		if tmp, _ := filepath.Glob(filepath.Join(a.cache, "nar", atomicfile.TempPrefix+"*")); len(tmp) > 0 {
			midWrite++ // killed while writing a NAR: the temp file stays until restart
		}
		a.pub.Restart(t)
	}
	t.Logf("%d kills (%d in the middle of a NAR write), %d checker scans", kills, midWrite, checker.scans.Load())

	bad := checkCacheEventually(t, a.cache, paths, 3*time.Minute)
	_, js := a.nats.Connect(t)
	waitDrained(t, js, "publisher", 3*time.Minute)
	checker.Stop()
	problems := checker.Problems()
	for _, p := range problems {
		t.Errorf("checker saw: %s", p)
	}
	for _, b := range bad {
		t.Error(b)
	}
	got, _ := checkCache(a.cache, paths)
	pins := pinnedOn(t, a.kubo)
	unpinned := 0
	for p, ni := range got {
		if !pins[ni.IPFSHash] {
			unpinned++
			t.Errorf("%s: CID %s not pinned on A", p, ni.IPFSHash)
		}
	}
	lost, dup := checkPublishedOnce(t, js, paths)
	dead := deadLetters(t, js)
	for _, d := range dead {
		t.Errorf("dead letter: %s %s", d.Kind, d.Reason)
	}
	left := leftovers(a.cache)
	// The running publisher cleaned what the last kill left, at its start.
	for _, l := range left {
		if !strings.Contains(l, string(os.PathSeparator)+atomicfile.TempPrefix) {
			t.Errorf("left behind: %s", l)
		}
	}
	if checker.seen.Load() == 0 {
		t.Error("the checker never saw a narinfo")
	}
	reliability(t, "publisher-sigkill", "runs", kills, "in", len(paths), "out", len(got), "mid_nar_write", midWrite,
		"scans", checker.scans.Load(), "narinfos_checked", checker.seen.Load(), "torn_seen", len(problems),
		"lost", lost+len(bad)+unpinned, "dup", dup, "dead", len(dead))
}
