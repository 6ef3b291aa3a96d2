package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// TestFaultNATSDownHundredBuilds: NATS is down for a whole nix-build of 100
// distinct derivations. Every build succeeds, the real hook runs 100 times
// and spools 100 events, and once NATS is back `nix-ipfs-hook flush`
// publishes each exactly once; flushing again, or replaying a spool file
// that was already published, adds nothing.
func TestFaultNATSDownHundredBuilds(t *testing.T) {
	b := newBuilder(t)
	b.nats.Stop()
	const n = 100
	outs, err := b.nix.TryBuild(batchExpr("natsdown-"+testenv.Nonce(), n, `echo "$i" > $out`, ""))
	if err != nil {
		t.Fatalf("nix-build with NATS down failed: %v", err)
	}
	paths := pathsOf(outs)
	if len(paths) != n {
		t.Fatalf("nix-build printed %d distinct paths, want %d", len(paths), n)
	}
	sp := hook.Spool{Dir: b.spool}
	files, err := sp.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != n {
		t.Fatalf("%d spooled events after %d builds with NATS down, want %d", len(files), n, n)
	}
	// Keep one spooled file to replay after it was published.
	replay, err := os.ReadFile(files[n/2])
	if err != nil {
		t.Fatal(err)
	}

	b.nats.Start(t)
	out, err := cmd2(b, "flush")
	if err != nil || !strings.Contains(out, fmt.Sprintf("flushed %d spooled events", n)) {
		t.Fatalf("flush: %v\n%s", err, out)
	}
	if out, err := cmd2(b, "flush"); err != nil || !strings.Contains(out, "flushed 0") {
		t.Fatalf("second flush: %v %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(b.spool, "99999999999999999999-replayed.json"), replay, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cmd2(b, "flush"); err != nil || !strings.Contains(out, "flushed 1") {
		t.Fatalf("flush of a replayed file: %v %s", err, out)
	}
	if left, _ := sp.List(); len(left) != 0 {
		t.Errorf("spool not empty after flush: %v", left)
	}

	_, js := b.nats.Connect(t)
	got := builtEvents(t, js)
	lost, dup := checkBuiltOnce(t, got, paths)
	if len(got) != n {
		t.Errorf("%d built events on the stream, want %d", len(got), n)
	}
	reliability(t, "nats-down-during-builds", "runs", n, "in", n, "spooled", len(files), "out", len(got), "lost", lost, "dup", dup)
}

// TestFaultNATSRestartWhilePublishing: the NATS server (JetStream on disk)
// is stopped in the middle of publishing and started again on the same port
// and store. The publisher rides it out: every path gets its narinfo, every
// built event is acked, one published event per path, no dead letters.
func TestFaultNATSRestartWhilePublishing(t *testing.T) {
	a := newHostA(t, testenv.KuboOffline())
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	const drvs, outsPer = 12, 5
	extra, script := multiOutputs(outsPer, 512)
	outs := a.nix.Build(t, batchExpr("natsrestart-"+testenv.Nonce(), drvs, script, extra))
	paths := allOutputs(t, a.nix, outs)
	if len(paths) != drvs*outsPer {
		t.Fatalf("%d paths built, want %d", len(paths), drvs*outsPer)
	}
	flushSpool(t, a.builder)

	// One path at a time, so that the restart lands in the middle.
	a.startPublisher(t, append([]string{"--concurrency", "1", "--events", "1"}, fastRecovery...)...)
	testenv.Eventually(t, 2*time.Minute, "the first path published", func() bool {
		m, _ := filepath.Glob(filepath.Join(a.cache, "*.narinfo"))
		return len(m) > 0
	})
	// Three restarts, each once publishing has moved on since the last.
	const restarts = 3
	var atStop []int
	for i := 0; i < restarts; i++ {
		last := countNarinfos(a.cache, paths)
		if i > 0 {
			testenv.Eventually(t, 2*time.Minute, "publishing to move on after a restart", func() bool {
				return countNarinfos(a.cache, paths) > last || last == len(paths)
			})
		}
		atStop = append(atStop, countNarinfos(a.cache, paths))
		a.nats.Stop()
		time.Sleep(2 * time.Second)
		a.nats.Start(t)
	}
	t.Logf("NATS restarted with %v of %d paths published", atStop, len(paths))

	bad := checkCacheEventually(t, a.cache, paths, 3*time.Minute)
	for _, b := range bad {
		t.Error(b)
	}
	_, js := a.nats.Connect(t)
	waitDrained(t, js, "publisher", 2*time.Minute)
	lost, dup := checkPublishedOnce(t, js, paths)
	dead := deadLetters(t, js)
	for _, d := range dead {
		t.Errorf("dead letter during a NATS restart: %s %s", d.Kind, d.Reason)
	}
	reliability(t, "nats-restart-while-publishing", "runs", restarts, "in", len(paths), "published_at_restarts", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(atStop)), ","), "[]"),
		"out", len(paths)-lost, "lost", lost+len(bad), "dup", dup, "dead", len(dead))
}

func countNarinfos(cache string, paths []string) int {
	n := 0
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(cache, storepath.HashPart(p)+".narinfo")); err == nil {
			n++
		}
	}
	return n
}

// checkCacheEventually waits for checkCache to find every path complete, and
// returns its last findings.
func checkCacheEventually(t *testing.T, cache string, paths []string, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, bad := checkCache(cache, paths)
		if len(bad) == 0 || time.Now().After(deadline) {
			return bad
		}
		time.Sleep(200 * time.Millisecond)
	}
}
