package integration

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// opsHost is host A with its publisher, and a second kubo (B) for a
// mirror the test starts when it wants: the pipeline an operator watches.
type opsHost struct {
	*hostA
	b          *testenv.Kubo
	pubMetrics string
	mirMetrics string
	mirror     *testenv.Proc
}

func newOpsHost(t *testing.T) *opsHost {
	t.Helper()
	h := &opsHost{hostA: newHostA(t), b: testenv.StartKubo(t), pubMetrics: freeAddr(t), mirMetrics: freeAddr(t)}
	h.startPublisher(t, "--metrics-addr", h.pubMetrics)
	return h
}

// startMirror runs `nix-ipfs mirror --name b` pinning onto B.
func (h *opsHost) startMirror(t *testing.T, extra ...string) {
	t.Helper()
	h.mirror = testenv.StartProc(t, filepath.Join(h.bin, "nix-ipfs"),
		append([]string{"mirror", "--name", "b", "--metrics-addr", h.mirMetrics}, extra...), mirEnv(h.nats.URL, h.b.API)...)
}

// opsClosure is a closure of two paths: top, which refers to dep.
func opsClosure(nonce string) string {
	dep := testenv.Drv("ops-dep-"+nonce, `echo dependency > $out`, "")
	return fmt.Sprintf(`let dep = %s; in %s`, dep, testenv.Drv("ops-top-"+nonce, `echo "uses ${dep}" > $out`, `inherit dep;`))
}

// nixIPFS runs the nix-ipfs binary against the host's NATS and returns its
// output and exit code (-1 when it did not run).
func (h *opsHost) nixIPFS(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(h.bin, "nix-ipfs"), args...)
	cmd.Env = append(os.Environ(), "NIX_IPFS_NATS_URL="+h.nats.URL)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("nix-ipfs %v: %v", args, err)
	return "", -1
}

// waitReplicated runs `nix-ipfs wait` for top's closure on k mirrors and
// fails the test unless it exits 0.
func (h *opsHost) waitReplicated(t *testing.T, top string, k int, timeout time.Duration) string {
	t.Helper()
	out, code := h.nixIPFS(t, "wait", "--closure", top, "--mirrors", fmt.Sprint(k), "--timeout", timeout.String(), "--poll", "200ms")
	if code != 0 {
		t.Fatalf("nix-ipfs wait --closure %s --mirrors %d: exit %d\n%s", top, k, code, out)
	}
	return out
}

// fetchThrough asks the substituter for p's narinfo, then for the NAR it
// names, as Nix does, and fails the test unless both are served.
func fetchThrough(t *testing.T, sub *substituterProc, p string) {
	t.Helper()
	resp, err := http.Get(sub.URL + "/" + storepath.HashPart(p) + ".narinfo")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("narinfo from the substituter: %v %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	served, err := narinfo.ParseBytes(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(sub.URL + "/" + served.URL)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("NAR from the substituter: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
