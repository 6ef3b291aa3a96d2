package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestHostileStorePathNames: real Nix builds outputs whose file names are
// legal in a NAR but easy to get wrong: names starting with "..", a name
// that is only dots, newlines, backslashes, quotes, non-ASCII, 255 bytes,
// and symlinks with such names and targets. The publisher publishes every
// path, each NAR byte-identical to nix-store --dump, and stock Nix copies
// the closure from the cache into a fresh store.
func TestHostileStorePathNames(t *testing.T) {
	a := newHostA(t, testenv.KuboOffline())
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	a.startPublisher(t, "--max-attempts", "2")
	nonce := testenv.Nonce()
	odd := testenv.Drv("odd-names-"+nonce, `
mkdir -p $out/..hidden-dir $out/dir
echo a > $out/..a
echo dots > $out/...
echo x > $out/..hidden-dir/x
echo nl > "$out/new
line"
echo bs > "$out/back\\slash"
echo q > "$out/quote\"s'"
echo u > "$out/ünï €"
echo t > "$out/tab	here"
echo l > "$out/$(printf 'l%.0s' $(seq 1 255))"
echo -n > $out/dir/-
ln -s ../..a $out/dir/..link
ln -s "new
line" $out/nl-link`, "")
	top := a.nix.Build(t, odd)[0]
	dotsOnly := a.nix.Build(t, testenv.Drv("dotfile-"+nonce, `mkdir $out; echo x > $out/..`+"`echo x`", ""))[0]
	paths := []string{top, dotsOnly}
	flushSpool(t, a.builder)
	got := a.waitPublished(t, paths, 2*time.Minute)
	for _, p := range paths {
		nar, err := os.ReadFile(filepath.Join(a.cache, got[p].URL))
		if err != nil {
			t.Fatal(err)
		}
		dump, err := exec.Command("nix-store", "--dump", p).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(nar, dump) {
			t.Errorf("%s: NAR differs from nix-store --dump (%d vs %d bytes)", p, len(nar), len(dump))
		}
	}
	checkStockNixCopy(t, a, top, "file://"+a.cache)
	_, js := a.nats.Connect(t)
	dead := deadLetters(t, js)
	for _, d := range dead {
		t.Errorf("dead letter: %s: %s", d.Kind, d.Reason)
	}
	reliability(t, "odd-file-names", "runs", len(paths), "in", len(paths), "out", len(got), "lost", len(paths)-len(got), "dead", len(dead))
}
