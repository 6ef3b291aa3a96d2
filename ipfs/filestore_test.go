package ipfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// TestCheckNocopy: the probe says yes only where a nocopy add works (the
// filestore enabled and the directory under its root), leaves no file and
// no filestore reference behind, and says why not otherwise.
func TestCheckNocopy(t *testing.T) {
	ctx := t.Context()
	p := ipfs.DefaultParams()

	on := testenv.StartKubo(t, testenv.KuboOffline(), testenv.KuboFilestore())
	inside := filepath.Join(on.FilestoreRoot(), "cache")
	if err := on.Client.CheckNocopy(ctx, inside, p); err != nil {
		t.Fatalf("CheckNocopy under the filestore root: %v", err)
	}
	if ents, _ := os.ReadDir(inside); len(ents) != 0 {
		t.Errorf("the probe left %d files in %s", len(ents), inside)
	}
	if refs, err := on.Client.FilestoreVerify(ctx, on.FilestoreRoot()); err != nil || len(refs) != 0 {
		t.Errorf("the probe left filestore references: %v %v", refs, err)
	}
	if err := on.Client.CheckNocopy(ctx, t.TempDir(), p); err == nil {
		t.Error("CheckNocopy outside the filestore root: no error")
	}

	off := testenv.StartKubo(t, testenv.KuboOffline())
	if err := off.Client.CheckNocopy(ctx, filepath.Join(off.FilestoreRoot(), "cache"), p); err == nil {
		t.Error("CheckNocopy with the filestore disabled: no error")
	}
}

// TestFilestoreAfterNARRemoved is what retention relies on with nocopy: a
// NAR removed from the cache leaves a reference that `filestore verify`
// reports as no-file; once its CID is unpinned (as prune does), repo GC
// drops the reference, and every other one still checks out.
func TestFilestoreAfterNARRemoved(t *testing.T) {
	ctx := t.Context()
	k := testenv.StartKubo(t, testenv.KuboOffline(), testenv.KuboFilestore())
	p := ipfs.DefaultParams()
	p.Nocopy = true
	dir := filepath.Join(k.FilestoreRoot(), "cache", "nar")
	os.MkdirAll(dir, 0o755)
	keep, gone := filepath.Join(dir, "keep.nar"), filepath.Join(dir, "gone.nar")
	os.WriteFile(keep, randomBytes(1, 600<<10), 0o644)
	os.WriteFile(gone, randomBytes(2, 600<<10), 0o644)
	if _, err := k.Client.AddFile(ctx, keep, p, true); err != nil {
		t.Fatal(err)
	}
	goneCID, err := k.Client.AddFile(ctx, gone, p, true)
	if err != nil {
		t.Fatal(err)
	}
	status := func() map[string]map[string]int {
		refs, err := k.Client.FilestoreVerify(ctx, k.FilestoreRoot())
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]map[string]int{}
		for _, r := range refs {
			if m[r.Path] == nil {
				m[r.Path] = map[string]int{}
			}
			m[r.Path][r.Status]++
		}
		return m
	}
	if s := status(); s[keep]["ok"] == 0 || s[gone]["ok"] == 0 || len(s[keep]) != 1 || len(s[gone]) != 1 {
		t.Fatalf("before: %v", s)
	}
	os.Remove(gone)
	if s := status(); s[gone]["no-file"] == 0 || s[gone]["ok"] != 0 {
		t.Fatalf("a removed NAR's references are not no-file: %v", s)
	}
	// Pinned, GC keeps the dangling reference; unpinned, GC drops it.
	if err := k.Client.RepoGC(ctx); err != nil {
		t.Fatal(err)
	}
	if s := status(); s[gone]["no-file"] == 0 {
		t.Fatalf("repo gc dropped a pinned reference: %v", s)
	}
	if err := k.Client.Unpin(ctx, goneCID); err != nil {
		t.Fatal(err)
	}
	if err := k.Client.RepoGC(ctx); err != nil {
		t.Fatal(err)
	}
	if s := status(); len(s[gone]) != 0 || len(s[keep]) != 1 || s[keep]["ok"] == 0 {
		t.Fatalf("after unpin and repo gc: %v", s)
	}
}
