package retention

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzRootsFile: a roots file of any content loads or fails with an error,
// never a panic, and what loads saves and loads back the same.
func FuzzRootsFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"roots":[{"outputs":["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"],"job":"x","last_built":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "roots.json")
		os.WriteFile(p, b, 0o644)
		rs := NewRoots()
		if err := rs.LoadFile(p); err != nil {
			return
		}
		q := filepath.Join(dir, "again.json")
		if err := rs.SaveFile(q, func(Root) bool { return true }); err != nil {
			t.Fatal(err)
		}
		rs2 := NewRoots()
		if err := rs2.LoadFile(q); err != nil || rs2.Len() != rs.Len() {
			t.Fatalf("saved roots do not load back: %v (%d vs %d)", err, rs2.Len(), rs.Len())
		}
	})
}
