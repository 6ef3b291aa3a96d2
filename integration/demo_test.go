package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestDemo runs `make demo`'s program (demo/) against the real binaries, so
// the README's first command is proven by CI and not only by hand.
func TestDemo(t *testing.T) {
	testenv.NewNix(t)
	testenv.NeedProgram(t, "ipfs")
	bin := testenv.Binaries(t)
	cmd := exec.Command("go", "run", "./demo", "-bin", bin)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "DEMO PASSED") {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"PINNED ON B", "FETCHED VIA", "ipfs"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
