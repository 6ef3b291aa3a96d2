package nixstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// TestSynthQueryPathInfos: many paths in one query give what
// QueryPathInfo gives for each, paths not in the store are absent, and a
// name that is not a store path is refused.
func TestSynthQueryPathInfos(t *testing.T) {
	const storeDir = "/nix/store"
	dbPath := filepath.Join(t.TempDir(), "db.sqlite")
	paths := synthDB(t, dbPath, storeDir, 300, randomGraph(300))
	d, err := OpenDB(dbPath, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	missing := synthPath(storeDir, 100000)
	ask := append([]string{missing}, paths...)
	got, err := d.QueryPathInfos(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(paths) || got[missing] != nil {
		t.Fatalf("%d infos for %d valid paths (missing one: %v)", len(got), len(paths), got[missing])
	}
	for _, p := range paths {
		one, err := d.QueryPathInfo(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%#v", *one) != fmt.Sprintf("%#v", *got[p]) {
			t.Errorf("%s: QueryPathInfos\n %#v\nQueryPathInfo\n %#v", p, *got[p], *one)
		}
	}
	if _, err := d.QueryPathInfos(ctx, []string{paths[0], "/etc/passwd"}); !errs.Is(err, errs.Invalid) {
		t.Errorf("QueryPathInfos of a non-store path: %v, want Invalid", err)
	}
	if got, err := d.QueryPathInfos(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("QueryPathInfos(nil) = %v, %v", got, err)
	}
}
