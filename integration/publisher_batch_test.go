package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// manyOutputs is one derivation with n outputs of a few KB each (random,
// so no two NARs are alike), every output but out referring to out: one
// build, so one post-build-hook call, hands the hook n output paths.
func manyOutputs(nonce string, n int) string {
	outs := []string{`"out"`}
	for i := 1; i < n; i++ {
		outs = append(outs, fmt.Sprintf(`"o%d"`, i))
	}
	return testenv.Drv("many-"+nonce, `
i=0
for o in $outputs; do
  eval "p=\$$o"
  i=$((i + 1))
  head -c $((1024 + (i * 7919) % 7168)) /dev/urandom > $p
  if [ "$o" != out ]; then echo "$out" >> $p; fi
done`, "outputs = [ "+strings.Join(outs, " ")+" ];")
}

// TestHookManySmallPathsOneEvent: a real nix-build of a derivation with
// 300 small outputs, through the real hook (one post-build-hook call),
// NATS, the publisher binary (defaults, which publish small paths in
// batches) and the mirror binary on a second kubo. The hook sends one
// built event naming all 300; every path gets a narinfo with an IPFSHash,
// every CID is pinned on B with its pinned event, and every NAR read back
// from B hashes to its signed NarHash.
func TestHookManySmallPathsOneEvent(t *testing.T) {
	const n = 300
	a := newHostA(t)
	a.startPublisher(t)
	b := testenv.StartKubo(t)
	_, js := a.nats.Connect(t)
	testenv.StartProc(t, filepath.Join(a.bin, "nix-ipfs"), []string{"mirror", "--name", "b"}, mirEnv(a.nats.URL, b.API)...)

	start := time.Now()
	built := a.nix.Build(t, manyOutputs(testenv.Nonce(), n))
	drv := strings.TrimSpace(a.nix.Run(t, "nix-store", "--query", "--deriver", built[0]))
	outs := strings.Fields(a.nix.Run(t, "nix-store", "--query", "--outputs", drv))
	if len(outs) != n {
		t.Fatalf("derivation %s has %d outputs, want %d", drv, len(outs), n)
	}
	evs := builtEvents(t, js)
	if len(evs) != 1 || len(evs[0].OutPaths) != n {
		t.Fatalf("%d built events, want one with all %d outputs", len(evs), n)
	}

	nis := a.waitPublished(t, outs, 3*time.Minute)
	var cids []string
	for _, p := range outs {
		if nis[p].IPFSHash == "" {
			t.Fatalf("narinfo of %s has no IPFSHash:\n%s", p, nis[p])
		}
		cids = append(cids, nis[p].IPFSHash)
	}
	t.Logf("built and published %d paths in %v", n, time.Since(start).Round(time.Millisecond))
	// The batch's log line follows its events' acks, which follow the
	// narinfos: it may come a moment after them.
	testenv.Eventually(t, time.Minute, "the publisher to log a batch (not the small paths one by one)", func() bool {
		return strings.Contains(readFile(t, a.pub.Log), "published a batch")
	})
	testenv.Eventually(t, 3*time.Minute, fmt.Sprintf("all %d CIDs pinned on B and announced", n), func() bool {
		if len(mirMissing(mirPins(t, b), cids)) > 0 {
			return false
		}
		ev := mirPinnedEvents(t, js, "b")
		for _, c := range cids {
			if ev[c] == nil {
				return false
			}
		}
		return true
	})
	t.Logf("all %d pinned on B %v after the build started", n, time.Since(start).Round(time.Millisecond))
	a.kubo.Stop(t) // what B holds, B serves alone
	for _, p := range outs {
		got, err := mirCatHash(t, b, nis[p].IPFSHash)
		if err != nil || got != nis[p].NarHash {
			t.Errorf("%s: CID %s on B hashes to %s (%v), NarHash %s", p, nis[p].IPFSHash, got, err, nis[p].NarHash)
		}
	}
}
