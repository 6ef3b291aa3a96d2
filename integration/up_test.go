package integration

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// TestUpServesCacheStockNixSubstitutesFrom: `nix-ipfs up` with no kubo
// answering starts its own, takes real builds through the real hook, and
// serves a cache (at /) and the substituter (at /substituter) that stock Nix
// copies from, trusting only the cache's key. SIGTERM stops it and its kubo.
func TestUpServesCacheStockNixSubstitutesFrom(t *testing.T) {
	testenv.NeedProgram(t, "ipfs")
	n := testenv.NewNix(t)
	bin := testenv.Binaries(t)
	data := t.TempDir()
	natsAddr, httpAddr := freeAddr(t), freeAddr(t)
	up := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"up",
		"--data-dir", data, "--secret-key-file", n.SecretKey,
		"--nats-listen", natsAddr, "--listen", httpAddr, "--kubo-init-profile", "test",
		"--log-format", "console"},
		"IPFS_PATH="+filepath.Join(t.TempDir(), "no-kubo-here"))
	base := "http://" + httpAddr
	testenv.Eventually(t, 90*time.Second, "nix-ipfs up serving", func() bool { return httpOK(base + "/nix-cache-info") })

	n.Hook = filepath.Join(bin, "nix-ipfs-hook")
	empty := filepath.Join(t.TempDir(), "hook.conf")
	os.WriteFile(empty, nil, 0o644)
	n.Env = []string{"NIX_IPFS_NATS_URL=nats://" + natsAddr, "NIX_IPFS_CONFIG=" + empty,
		"NIX_IPFS_SPOOL_DIR=" + filepath.Join(t.TempDir(), "spool")}
	top := n.Build(t, richClosure(testenv.Nonce()))[0]
	closure := closureOf(t, n, top)
	testenv.Eventually(t, 2*time.Minute, "the closure published", func() bool {
		for _, p := range closure {
			if !httpOK(base + "/" + storepath.HashPart(p) + ".narinfo") {
				return false
			}
		}
		return true
	})
	a := &hostA{builder: &builder{nix: n}}
	checkStockNixCopy(t, a, top, base)
	checkStockNixCopy(t, a, top, base+"/substituter")

	up.Signal(syscall.SIGTERM)
	if !up.Wait(60 * time.Second) {
		t.Fatal("nix-ipfs up did not stop within 60 s of SIGTERM")
	}
	if code := up.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("nix-ipfs up exited %d after SIGTERM", code)
	}
	if _, err := os.Stat(filepath.Join(data, "ipfs", "api")); !os.IsNotExist(err) {
		t.Errorf("up's kubo still running after up stopped (api file: %v)", err)
	}
}

// TestUpExitsWhenAPartFails: when its HTTP address is taken, up stops all
// its parts and exits non-zero rather than running on without them.
func TestUpExitsWhenAPartFails(t *testing.T) {
	testenv.NeedProgram(t, "ipfs")
	n := testenv.NewNix(t)
	bin := testenv.Binaries(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	up := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"up",
		"--data-dir", t.TempDir(), "--secret-key-file", n.SecretKey,
		"--nats-listen", freeAddr(t), "--listen", taken.Addr().String(), "--kubo-init-profile", "test",
		"--log-format", "console"},
		"IPFS_PATH="+filepath.Join(t.TempDir(), "no-kubo-here"))
	if !up.Wait(90 * time.Second) {
		t.Fatal("nix-ipfs up kept running with its HTTP address taken")
	}
	if code := up.Cmd.ProcessState.ExitCode(); code == 0 {
		t.Error("nix-ipfs up exited 0 with its HTTP address taken")
	}
}
