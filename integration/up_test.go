package integration

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
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
	// By copy, cut at references: kubo references none of the cache's
	// files (--ipfs-nocopy is off by default: docs/CHUNKING.md).
	if refs := upFilestore(t, data); len(refs) != 0 {
		t.Errorf("up's kubo references %d files by default, want the NARs added by copy", len(refs))
	}
	if !strings.Contains(up.Tail(400), "NARs added to kubo by copy") {
		t.Error("up did not say it adds NARs by copy")
	}
	a := &hostA{builder: &builder{nix: n}}
	checkStockNixCopy(t, a, top, base)
	checkStockNixCopy(t, a, top, base+"/substituter")
	// up's substituter trusts the cache's own key: the CIDs the publisher
	// signed are sent as they are read, on their first fetch (each NAR
	// served says "trust": "signed"; "streamed" only if it began before
	// its read ahead ended).
	if b, _ := os.ReadFile(up.Log); !regexp.MustCompile(`NAR served.*"trust": "signed".*"source": "ipfs"`).Match(b) {
		t.Errorf("up's substituter did not trust a signed CID")
	}

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

// upFilestore returns what up's kubo (under data) holds by reference, each
// reference checked.
func upFilestore(t *testing.T, data string) []ipfs.FilestoreEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "ipfs", "api"))
	if err != nil {
		t.Fatal(err)
	}
	url, err := ipfs.ResolveAPI(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ipfs.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := k.FilestoreVerify(t.Context(), data)
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

// TestUpZeroCopy: with --ipfs-nocopy, up's kubo holds every NAR of a
// closure as filestore references to the cache's file, and every
// reference checks out.
func TestUpZeroCopy(t *testing.T) {
	testenv.NeedProgram(t, "ipfs")
	n := testenv.NewNix(t)
	bin := testenv.Binaries(t)
	data := t.TempDir()
	natsAddr, httpAddr := freeAddr(t), freeAddr(t)
	up := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"up", "--ipfs-nocopy",
		"--data-dir", data, "--secret-key-file", n.SecretKey,
		"--nats-listen", natsAddr, "--listen", httpAddr, "--kubo-init-profile", "test",
		"--log-format", "console"},
		"IPFS_PATH="+filepath.Join(t.TempDir(), "no-kubo-here"))
	base := "http://" + httpAddr
	testenv.Eventually(t, 90*time.Second, "nix-ipfs up serving", func() bool { return httpOK(base + "/nix-cache-info") })
	if !strings.Contains(up.Tail(400), "zero-copy: NARs added to kubo by reference") {
		t.Fatalf("up --ipfs-nocopy did not take zero-copy:\n%s", up.Tail(30))
	}
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
	byPath := map[string]int{}
	for _, r := range upFilestore(t, data) {
		if r.Status != "ok" {
			t.Errorf("filestore reference %s to %s: %s %s", r.CID, r.Path, r.Status, r.Err)
		}
		byPath[r.Path]++
	}
	cache := filepath.Join(data, "cache")
	infos, bad := checkCache(cache, closure)
	for _, b := range bad {
		t.Error(b)
	}
	for p, ni := range infos {
		if ni.NarSize > 0 && byPath[filepath.Join(cache, ni.URL)] == 0 {
			t.Errorf("%s: NAR %s is not referenced by up's kubo (copied?)", p, ni.URL)
		}
	}
	checkStockNixCopy(t, &hostA{builder: &builder{nix: n}}, top, base+"/substituter")
}

// TestUpNocopyOutsideFilestoreRoot: with --cache-dir outside its data
// directory, up's kubo cannot reference the NARs: up --ipfs-nocopy
// refuses to start and says why.
func TestUpNocopyOutsideFilestoreRoot(t *testing.T) {
	testenv.NeedProgram(t, "ipfs")
	n := testenv.NewNix(t)
	bin := testenv.Binaries(t)
	args := []string{"up", "--ipfs-nocopy", "--data-dir", t.TempDir(), "--cache-dir", t.TempDir(), "--secret-key-file", n.SecretKey,
		"--nats-listen", freeAddr(t), "--listen", freeAddr(t), "--kubo-init-profile", "test", "--log-format", "console"}
	up := n.StartProc(t, filepath.Join(bin, "nix-ipfs"), args, "IPFS_PATH="+filepath.Join(t.TempDir(), "no-kubo-here"))
	if !up.Wait(90 * time.Second) {
		t.Fatal("up --ipfs-nocopy kept running with a cache its kubo cannot reference")
	}
	if code := up.Cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(up.Tail(20), "cannot add files under") {
		t.Errorf("up --ipfs-nocopy exited %d:\n%s", code, up.Tail(20))
	}
}
