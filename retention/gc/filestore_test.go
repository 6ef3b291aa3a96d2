package gc_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/retention/gc"
)

// TestVerifyFilestore: gc --verify-filestore passes while every NAR added
// by reference is in place, and fails naming the file once a pinned NAR's
// file is gone.
func TestVerifyFilestore(t *testing.T) {
	ctx := t.Context()
	k := testenv.StartKubo(t, testenv.KuboOffline(), testenv.KuboFilestore())
	p := ipfs.DefaultParams()
	p.Nocopy = true
	dir := filepath.Join(k.FilestoreRoot(), "cache", "nar")
	os.MkdirAll(dir, 0o755)
	var names []string
	for i := 0; i < 2; i++ {
		b := make([]byte, 300<<10)
		rand.Read(b)
		name := filepath.Join(dir, []string{"a.nar", "b.nar"}[i])
		os.WriteFile(name, b, 0o644)
		if _, err := k.Client.AddFile(ctx, name, p, true); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	var out bytes.Buffer
	if err := gc.VerifyFilestore(ctx, k.Client, &out); err != nil || !strings.Contains(out.String(), "all ok") {
		t.Fatalf("intact filestore: %v\n%s", err, out.String())
	}
	os.Remove(names[1])
	out.Reset()
	err := gc.VerifyFilestore(ctx, k.Client, &out)
	if err == nil || !strings.Contains(out.String(), "no-file: cache/nar/b.nar") || strings.Contains(out.String(), "a.nar") {
		t.Fatalf("a pinned NAR's file removed: %v\n%s", err, out.String())
	}
}
