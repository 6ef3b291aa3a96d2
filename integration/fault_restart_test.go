package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/publisher"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// TestFaultPublisherRestartTakesOverLeases: the publisher is SIGKILLed in
// the middle of a large NAR while it holds leases on paths of a 17-path
// closure, and restarted at once. The restarted publisher takes over its
// dead predecessor's leases (same machine, process gone: released at
// start-up, or taken over when met) instead of waiting for them to expire: the leases here live 5 minutes, and every path is
// published long before that. Each path is announced exactly once.
//
// The time from restart to all published is logged as a RESTART line for
// docs/BENCHMARKS.md; the test asserts the takeover, not the time.
func TestFaultPublisherRestartTakesOverLeases(t *testing.T) {
	a := newHostA(t, testenv.KuboOffline())
	nonce := testenv.Nonce()
	const smalls = 15
	expr := fmt.Sprintf(`let big = %s;`, testenv.Drv("restart-big-"+nonce, "head -c 201326592 /dev/urandom > $out", ""))
	var refs, inherit []string
	for i := 0; i < smalls; i++ {
		expr += fmt.Sprintf(" s%d = %s;", i, testenv.Drv(fmt.Sprintf("restart-small-%d-%s", i, nonce), fmt.Sprintf("echo %d > $out", i), ""))
		refs = append(refs, fmt.Sprintf("${s%d}", i))
		inherit = append(inherit, fmt.Sprintf("s%d", i))
	}
	expr += " in " + testenv.Drv("restart-top-"+nonce, "echo ${big} "+strings.Join(refs, " ")+" > $out",
		"inherit big "+strings.Join(inherit, " ")+";")
	outs := a.nix.Build(t, expr)
	closure := closureOf(t, a.nix, outs[0])
	if len(closure) != smalls+2 {
		t.Fatalf("closure of %d paths, want %d", len(closure), smalls+2)
	}
	flushSpool(t, a.builder)
	big := ""
	for _, p := range closure {
		if strings.Contains(p, "restart-big-") {
			big = p
		}
	}

	_, js := a.nats.Connect(t)
	// Leases that would outlive the test if nobody took them over.
	a.startPublisher(t, "--lock-ttl", "5m")
	var held []string
	testenv.Eventually(t, 3*time.Minute, "the publisher writing the large NAR while holding leases", func() bool {
		if _, err := os.Stat(filepath.Join(a.cache, storepath.HashPart(big)+".narinfo")); err == nil {
			t.Fatal("the large path was published before the publisher could be killed in it; make it larger")
		}
		tmp, _ := filepath.Glob(filepath.Join(a.cache, "nar", atomicfile.TempPrefix+"*"))
		if len(tmp) == 0 {
			return false
		}
		fi, err := os.Stat(tmp[0])
		if err != nil || fi.Size() < 1<<20 {
			return false
		}
		held = leaseKeys(t, js)
		return len(held) > 0
	})
	a.pub.Signal(syscall.SIGKILL)
	if !a.pub.Wait(30 * time.Second) {
		t.Fatal("publisher did not die of SIGKILL")
	}
	stillHeld := leaseKeys(t, js)
	if len(stillHeld) == 0 {
		t.Fatalf("no lease left by the killed publisher (it held %v)", held)
	}
	done := countNarinfos(a.cache, closure)
	logOffset := fileSize(a.pub.Log)
	restarted := time.Now()
	a.pub.Restart(t)
	a.waitPublished(t, closure, 2*time.Minute) // well under the leases' 5 minutes
	took := time.Since(restarted)

	b, _ := os.ReadFile(a.pub.Log)
	after := string(b[logOffset:])
	// At start-up it releases its predecessor's leases; one it meets while
	// publishing (a race with the start-up scan) it takes over.
	reclaimed := strings.Count(after, "released the publish lease of a dead publisher") +
		strings.Count(after, "took over the publish lease of a dead publisher")
	if reclaimed == 0 {
		t.Errorf("the restarted publisher reclaimed none of the %d leases its predecessor left; its log:\n%s", len(stillHeld), after)
	}
	waitDrained(t, js, "publisher", 2*time.Minute)
	lost, dup := checkPublishedOnce(t, js, closure)
	if lost+dup > 0 {
		t.Errorf("%d paths never announced, %d announced twice", lost, dup)
	}
	for _, d := range deadLetters(t, js) {
		t.Errorf("dead letter: %s %s", d.Kind, d.Reason)
	}
	if left := leaseKeys(t, js); len(left) > 0 {
		t.Errorf("leases left after everything was published: %v", left)
	}
	t.Logf("RESTART paths=%d published_before_kill=%d leases_at_kill=%d reclaimed=%d restart_to_all_published=%s",
		len(closure), done, len(stillHeld), reclaimed, took.Round(100*time.Millisecond))
	reliability(t, "publisher-restart-lease-takeover", "runs", 1, "in", len(closure), "out", countNarinfos(a.cache, closure),
		"lost", lost, "dup", dup, "dead", 0)
}

func leaseKeys(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, publisher.LockBucket)
	if err != nil {
		return nil
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		return nil // jetstream.ErrNoKeysFound
	}
	return keys
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
