package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestFaultDiskFull: the cache directory is a tmpfs of 8 MiB and the paths
// to publish need more. The publisher says "no space left on device" in its
// log, retries the events with backoff as transient failures (none is
// dead-lettered), leaves no truncated NAR or narinfo and no temp file
// behind, and publishes the rest once the disk is made bigger.
func TestFaultDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "mounting a tmpfs needs root")
	}
	a := newHostA(t, testenv.KuboOffline())
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	if err := os.MkdirAll(a.cache, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "nix-ipfs-test", a.cache).CombinedOutput(); err != nil {
		testenv.Unavailable(t, "mount -t tmpfs: "+err.Error()+": "+string(out))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", a.cache).Run() })

	// Four paths of 3 MiB: two fit in 8 MiB, the third does not.
	outs := a.nix.Build(t, batchExpr("diskfull-"+testenv.Nonce(), 4, `head -c 3145728 /dev/urandom > $out`, ""))
	paths := pathsOf(outs)
	flushSpool(t, a.builder)
	checker := startCacheChecker(t, a.cache, 5*time.Millisecond)
	a.startPublisher(t, append([]string{"--concurrency", "1", "--events", "1"}, fastRecovery...)...)

	full := func() int { return strings.Count(readFile(t, a.pub.Log), "no space left on device") }
	testenv.Eventually(t, 2*time.Minute, "the publisher to run into the full disk twice", func() bool {
		return full() >= 2 && len(retryDelays(t, a.pub.Log)) >= 2
	})
	// What a failed write started is removed, not left to fill the disk.
	testenv.Eventually(t, time.Minute, "no temp file left in the full cache", func() bool {
		return len(leftovers(a.cache)) == 0
	})
	published := countNarinfos(a.cache, paths)
	if published >= len(paths) {
		t.Fatalf("all %d paths published on a disk too small for them", published)
	}
	_, js := a.nats.Connect(t)
	if dead := deadLetters(t, js); len(dead) != 0 {
		t.Fatalf("dead-lettered while the disk was full: %s: %s", dead[0].Kind, dead[0].Reason)
	}
	// Every retry of an event that failed on the full disk is transient:
	// a disk gets freed, and the event must not run out of attempts.
	for _, l := range nonTransientRetries(t, a.pub.Log) {
		t.Errorf("a full disk must be retried as transient, without limit: %s", l)
	}

	if out, err := exec.Command("mount", "-o", "remount,size=64m", a.cache).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	bad := checkCacheEventually(t, a.cache, paths, 3*time.Minute)
	for _, b := range bad {
		t.Error(b)
	}
	waitDrained(t, js, "publisher", 2*time.Minute)
	checker.Stop()
	for _, p := range checker.Problems() {
		t.Errorf("checker saw: %s", p)
	}
	dead := deadLetters(t, js)
	for _, d := range dead {
		t.Errorf("dead letter: %s: %s", d.Kind, d.Reason)
	}
	if l := leftovers(a.cache); len(l) != 0 {
		t.Errorf("left behind: %v", l)
	}
	counts := publishedCounts(t, js)
	lost := len(bad)
	for _, p := range paths {
		if counts[p] != 1 {
			lost++
			t.Errorf("%s: %d published events", p, counts[p])
		}
	}
	reliability(t, "cache-disk-full", "runs", 1, "enospc_logged", full(), "in", len(paths), "published_while_full", published,
		"out", len(paths)-lost, "retries", len(retryDelays(t, a.pub.Log)), "torn_seen", len(checker.Problems()),
		"lost", lost, "dead", len(dead))
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
