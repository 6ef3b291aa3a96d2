package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestWaitClosureReplicated is the release gate over a real pipeline: a
// nix-build through the hook, the publisher binary, and a mirror binary
// pinning on a second kubo. Before any mirror runs, `nix-ipfs wait` gives
// up at its timeout with exit 1, naming every path of the closure as
// missing; a wait started then returns 0 once the mirror, started after
// it, has pinned the whole closure (and the pins are really on B); status
// --closure shows B holding each path; and a wait for two mirrors still
// fails, saying each path has one of two.
func TestWaitClosureReplicated(t *testing.T) {
	h := newOpsHost(t)
	top := h.nix.Build(t, opsClosure(testenv.Nonce()))[0]
	closure := closureOf(t, h.nix, top)
	if len(closure) != 2 {
		t.Fatalf("closure of %s: %v", top, closure)
	}
	infos := h.waitPublished(t, closure, 2*time.Minute)

	out, code := h.nixIPFS(t, "wait", "--closure", top, "--mirrors", "1", "--timeout", "2s", "--poll", "200ms")
	if code != 1 {
		t.Fatalf("wait with no mirror: exit %d, want 1\n%s", code, out)
	}
	for _, p := range closure {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), p+" - missing: 0 mirrors of 1") {
			t.Errorf("wait with no mirror does not name %s as missing:\n%s", p, out)
		}
	}
	if !strings.Contains(out, "2 of 2 paths of "+top+" not on 1 mirror(s)") {
		t.Errorf("wait with no mirror does not say what is missing:\n%s", out)
	}

	// A gate waiting while the mirror starts.
	gate := exec.Command(filepath.Join(h.bin, "nix-ipfs"), "wait", "--closure", top, "--mirrors", "1", "--timeout", "3m", "--poll", "200ms")
	gate.Env = append(gate.Environ(), "NIX_IPFS_NATS_URL="+h.nats.URL)
	var gateOut strings.Builder
	gate.Stdout, gate.Stderr = &gateOut, &gateOut
	if err := gate.Start(); err != nil {
		t.Fatal(err)
	}
	h.startMirror(t)
	if err := gate.Wait(); err != nil {
		t.Fatalf("wait while the mirror pins: %v\n%s", err, gateOut.String())
	}
	if !strings.Contains(gateOut.String(), "all 2 paths on at least 1 mirror(s)") {
		t.Errorf("wait's report:\n%s", gateOut.String())
	}
	pins := mirPins(t, h.b)
	for _, p := range closure {
		if !pins[infos[p].IPFSHash] {
			t.Errorf("wait returned, but %s (%s) is not pinned on B", p, infos[p].IPFSHash)
		}
	}

	out, code = h.nixIPFS(t, "status", "--closure", top)
	flat := strings.Join(strings.Fields(out), " ")
	for _, p := range closure {
		if !strings.Contains(flat, p+" b replicated") {
			t.Errorf("status --closure does not show b holding %s:\n%s", p, out)
		}
	}
	if code != 0 {
		t.Errorf("status --closure: exit %d", code)
	}

	out, code = h.nixIPFS(t, "wait", "--closure", top, "--mirrors", "2", "--timeout", "1s", "--poll", "200ms")
	if code != 1 || strings.Count(out, "missing: 1 mirror of 2") != 2 {
		t.Errorf("wait for 2 mirrors with 1: exit %d\n%s", code, out)
	}
	// A store path nothing published: not replicated, said so.
	other := filepath.Join(filepath.Dir(top), strings.Repeat("0", 32)+"-never-built")
	out, code = h.nixIPFS(t, "wait", "--closure", other, "--timeout", "1s")
	if code != 1 || !strings.Contains(out, "missing: not published") {
		t.Errorf("wait for a path never published: exit %d\n%s", code, out)
	}
	if out, code := h.nixIPFS(t, "wait", "--mirrors", "1"); code != 2 || !strings.Contains(out, "--closure is required") {
		t.Errorf("wait without --closure: exit %d\n%s", code, out)
	}
	t.Logf("the gate's output:\n%s", gateOut.String())
}
