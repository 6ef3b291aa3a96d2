package hook

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// FuzzDrvOutputs: the hook reads a build's outputs from its derivation
// when Nix passes OUT_PATHS empty (Nix 2.8). Whatever the .drv file holds,
// DrvOutputs must not panic, and what it returns is sorted and has no empty
// path. Seeds: the derivation of hook_test.go and testdata/fuzz (one
// written by real Nix).
func FuzzDrvOutputs(f *testing.F) {
	real := strings.ReplaceAll(drvText, "/STORE", store)
	f.Add([]byte(real))
	f.Add([]byte(real[:len(real)/2]))
	f.Add([]byte(strings.Replace(real, `("out","`, `("out","","",""),("x","`, 1)))
	f.Add([]byte(`Derive([],[],[],"","",[],[])`))
	f.Add([]byte(`Derive([("out","","r:sha256","")],[],[],"x","/bin/sh",[],[])`))
	f.Add([]byte("Derive("))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "x.drv")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		outs, err := DrvOutputs(p)
		if err != nil {
			return
		}
		if !sort.StringsAreSorted(outs) {
			t.Fatalf("outputs not sorted: %q", outs)
		}
		for _, o := range outs {
			if o == "" {
				t.Fatal("an empty output path")
			}
		}
	})
}
