package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror"
)

// kuboOutage is how long A's kubo is down: long enough for several retries
// with backoff, as a daemon restart or upgrade would be.
const kuboOutage = 30 * time.Second

// TestFaultKuboOutages: A's kubo is stopped for 30 s in the middle of
// publishing, then B's kubo is stopped in the middle of mirroring. The
// publisher and the mirror retry with backoff and catch up by themselves:
// every path is published and pinned on A, every CID pinned on B, and
// nothing is dead-lettered.
func TestFaultKuboOutages(t *testing.T) {
	t.Parallel() // mostly waiting out the outage
	a := newHostA(t)
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	const drvs, outsPer = 8, 5
	extra, script := multiOutputs(outsPer, 256)
	outs := a.nix.Build(t, batchExpr("kubodown-"+testenv.Nonce(), drvs, script, extra))
	paths := allOutputs(t, a.nix, outs)
	flushSpool(t, a.builder)

	a.startPublisher(t, append([]string{"--concurrency", "1", "--events", "1"}, fastRecovery...)...)
	testenv.Eventually(t, 2*time.Minute, "the first path published", func() bool {
		m, _ := filepath.Glob(filepath.Join(a.cache, "*.narinfo"))
		return len(m) > 0
	})
	a.kubo.Stop(t)
	// A path whose add finished just before the stop may still get its
	// narinfo; count from a moment later.
	time.Sleep(time.Second)
	atStop := countNarinfos(a.cache, paths)
	time.Sleep(kuboOutage - time.Second)
	during := countNarinfos(a.cache, paths)
	a.kubo.Start(t)

	bad := checkCacheEventually(t, a.cache, paths, 3*time.Minute)
	for _, b := range bad {
		t.Error(b)
	}
	_, js := a.nats.Connect(t)
	waitDrained(t, js, "publisher", 3*time.Minute)
	got, _ := checkCache(a.cache, paths)
	pinsA := pinnedOn(t, a.kubo)
	lost := len(bad)
	for p, ni := range got {
		if !pinsA[ni.IPFSHash] {
			lost++
			t.Errorf("%s: %s not pinned on A", p, ni.IPFSHash)
		}
	}
	// With --concurrency 1, at most the one path whose add finished just
	// before the stop may have been completed after the count.
	if during > atStop+1 {
		t.Errorf("%d paths published while kubo was down (from %d to %d)", during-atStop, atStop, during)
	}
	dead := deadLetters(t, js)
	for _, d := range dead {
		t.Errorf("dead letter: %s on %s: %s", d.Kind, d.Subject, d.Reason)
	}
	retries := retryDelays(t, a.pub.Log)
	for _, l := range nonTransientRetries(t, a.pub.Log) {
		t.Errorf("a kubo outage must be retried as transient, without limit: %s", l)
	}
	if len(retries) < 2 {
		t.Errorf("the publisher logged %d retries during a %v kubo outage", len(retries), kuboOutage)
	}
	reliability(t, "kubo-a-down-30s-while-publishing", "runs", 1, "in", len(paths), "published_before", atStop,
		"out", len(got), "retries", len(retries), "backoff", strings.Join(retries, ","), "lost", lost, "dead", len(dead))

	t.Run("MirrorKuboB", func(t *testing.T) {
		if !hasCommand(t, a.bin, "mirror") {
			t.Skip("nix-ipfs mirror has not landed")
		}
		b := testenv.StartKubo(t)
		m := testenv.StartProc(t, filepath.Join(a.bin, "nix-ipfs"),
			[]string{"mirror", "--name", "b", "--concurrency", "1", "--backoff", "1s,2s,4s", "--ack-wait", "10s"},
			"NIX_IPFS_NATS_URL="+a.nats.URL, "NIX_IPFS_KUBO_API="+b.API,
			"NIX_IPFS_LOG_FORMAT=console", "NIX_IPFS_LOG_LEVEL=debug")
		var cids []string
		for _, ni := range got {
			cids = append(cids, ni.IPFSHash)
		}
		testenv.Eventually(t, 2*time.Minute, "the first pin on B", func() bool {
			return len(pinnedOn(t, b)) > 0
		})
		pinnedBefore := len(pinnedOn(t, b))
		b.Stop(t)
		time.Sleep(10 * time.Second)
		b.Start(t)
		testenv.Eventually(t, 3*time.Minute, "every CID pinned on B", func() bool {
			pins := pinnedOn(t, b)
			for _, c := range cids {
				if !pins[c] {
					return false
				}
			}
			return true
		})
		waitDrained(t, js, mirror.Durable("b"), 2*time.Minute)
		perCID := map[string]int{}
		for _, e := range streamEvents(t, js, events.SubjectPinned("b")) {
			perCID[e.(*events.Pinned).CID]++
		}
		lost, dup := 0, 0
		for _, c := range cids {
			switch perCID[c] {
			case 0:
				lost++
				t.Errorf("%s: no pinned event", c)
			case 1:
			default:
				dup++
			}
		}
		dead := deadLetters(t, js)
		for _, d := range dead {
			t.Errorf("dead letter: %s on %s: %s", d.Kind, d.Subject, d.Reason)
		}
		retries := retryDelays(t, m.Log)
		for _, l := range nonTransientRetries(t, m.Log) {
			t.Errorf("an outage of the mirror's kubo must be retried as transient, without limit: %s", l)
		}
		reliability(t, "kubo-b-down-10s-while-mirroring", "runs", 1, "in", len(cids), "pinned_before", pinnedBefore,
			"out", len(cids)-lost, "retries", len(retries), "lost", lost, "dup", dup, "dead", len(dead))
	})
}

// nonTransientRetries returns the "will retry" lines of a worker's console
// log whose error is not transient: those count towards --max-attempts.
func nonTransientRetries(t *testing.T, log string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(readFile(t, log), "\n") {
		if strings.Contains(line, "will retry") && !strings.Contains(line, `"kind": "transient"`) {
			out = append(out, line)
		}
	}
	return out
}

var retryInRE = regexp.MustCompile(`"retry_in": "([0-9.a-zµ]+)"`)

// retryDelays returns the retry_in of every "will retry" line of a worker's
// console log, in order.
func retryDelays(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "will retry") {
			continue
		}
		if m := retryInRE.FindStringSubmatch(line); m != nil {
			out = append(out, m[1])
		} else {
			out = append(out, "?")
		}
	}
	return out
}
