package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestDemo runs `make demo`'s program (demo/) against the real binaries, so
// the README's first command is proven by CI and not only by hand; once per
// Nix version (with -nix-root for the chroot's Nix 2.26, where the client's
// fetch, the builds and `nix-ipfs up` run inside the chroot).
func TestDemo(t *testing.T) {
	testenv.ForEachNix(t, func(t *testing.T, n *testenv.Nix) {
		testenv.NeedProgram(t, "ipfs")
		bin := testenv.Binaries(t)
		args := []string{"run", "./demo", "-bin", bin}
		if n.Root != "" {
			args = append(args, "-nix-root", n.Root)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "DEMO PASSED") {
			t.Fatalf("demo: %v\n%s", err, out)
		}
		for _, want := range []string{"PINNED ON B", "FETCHED VIA", "ipfs", "Nix: nix-store (Nix) " + n.Version} {
			if !strings.Contains(string(out), want) {
				t.Errorf("demo output lacks %q", want)
			}
		}
	})
}
