package ipfs_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// TestMFSOps: the MFS calls the publisher's --mfs-dir makes, against a
// real daemon: write, link a CID (twice: no error, no change), stat, read
// back through the directory's CID, remove (twice), named pins, pin
// update.
func TestMFSOps(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx := context.Background()
	c := k.Client
	nar, err := c.Add(ctx, bytes.NewReader([]byte("a NAR")), ipfs.DefaultParams(), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.FilesMkdir(ctx, "/cache/nar"); err != nil {
		t.Fatal(err)
	}
	if err := c.FilesWrite(ctx, "/cache/x.narinfo", []byte("StorePath: x\n"), true); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := c.FilesLink(ctx, nar, "/cache/nar/a.nar", true); err != nil {
			t.Fatalf("link %d: %v", i, err)
		}
	}
	got, err := c.FilesStat(ctx, "/cache/nar/a.nar")
	if err != nil || !got.Equals(nar) {
		t.Fatalf("stat of the link: %v %v, want %v", got, err, nar)
	}
	root, err := c.FilesStat(ctx, "/cache")
	if err != nil {
		t.Fatal(err)
	}
	out := k.IPFS(t, "cat", "/ipfs/"+root.String()+"/x.narinfo")
	if out != "StorePath: x\n" {
		t.Errorf("narinfo through the root: %q", out)
	}
	for i := 0; i < 2; i++ {
		if err := c.FilesRm(ctx, "/cache/x.narinfo", true); err != nil {
			t.Fatalf("rm %d: %v", i, err)
		}
	}
	if _, err := c.FilesStat(ctx, "/cache/x.narinfo"); !ipfs.IsNotExist(err) {
		t.Errorf("stat of a removed file: %v, want not-exist", err)
	}
	root2, err := c.FilesStat(ctx, "/cache")
	if err != nil || root2.Equals(root) {
		t.Fatalf("root after rm: %v %v", root2, err)
	}
	if err := c.Pin(ctx, root, "root"); err != nil {
		t.Fatal(err)
	}
	named, err := c.PinsNamed(ctx, "root")
	if err != nil || len(named) != 1 || !named[0].Equals(root) {
		t.Errorf("pins named root: %v %v, want [%v]", named, err, root)
	}
	// pin update moves the pin and keeps its name.
	if err := c.PinUpdate(ctx, root, root2); err != nil {
		t.Fatal(err)
	}
	named, err = c.PinsNamed(ctx, "root")
	if err != nil || len(named) != 1 || !named[0].Equals(root2) {
		t.Errorf("pins named root after pin update: %v %v, want [%v]", named, err, root2)
	}
	rc, err := c.Cat(ctx, nar)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "a NAR" {
		t.Errorf("NAR: %q", b)
	}
}
