package upgradeload

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestExpr: both generations' expressions evaluate with real Nix, and
// differ only where generation 2 says (the patched and grown library).
func TestExpr(t *testing.T) {
	p, err := NewPlan(Config{Bytes: 8 << 20, Nonce: "test"})
	if err != nil {
		t.Fatal(err)
	}
	n, b := p.Files()
	if n == 0 || b < 4<<20 || b > 12<<20 {
		t.Errorf("%d files, %d bytes, for an 8 MiB plan", n, b)
	}
	var exprs []string
	for gen := 1; gen <= 2; gen++ {
		e, err := p.Expr(gen)
		if err != nil {
			t.Fatal(err)
		}
		exprs = append(exprs, e)
	}
	if !strings.Contains(exprs[1], p.Patched()) || !strings.Contains(exprs[1], "nix-ipfs-gen2") {
		t.Errorf("generation 2 does not patch %s", p.Patched())
	}
	if strings.Contains(exprs[0], "nix-ipfs-gen2") {
		t.Errorf("generation 1 is patched")
	}
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Skip("no nix-instantiate")
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		f := t.TempDir() + "/e.nix"
		if err := os.WriteFile(f, []byte(e), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("nix-instantiate", "--option", "substituters", "", f).CombinedOutput()
		if err != nil {
			t.Fatalf("nix-instantiate: %v\n%s", err, out)
		}
		seen[strings.TrimSpace(string(out))] = true
	}
	if len(seen) != 2 {
		t.Errorf("the two generations are one derivation: %v", seen)
	}
}
