package nar_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	gonix "github.com/nix-community/go-nix/pkg/nar"

	"github.com/nix-ipfs/nix-ipfs/nar"
	"github.com/nix-ipfs/nix-ipfs/nar/nartest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.nar with nix-store --dump")

// hostileTree makes, at root, a tree of names legal in a NAR but easy to
// get wrong: names starting with "..", a name of dots only, newlines,
// backslashes, quotes, non-ASCII, 255 bytes, an executable, an empty file,
// and symlinks with such names and targets (as TestHostileStorePathNames
// has real Nix build).
func hostileTree(t *testing.T, root string) {
	t.Helper()
	dirs := []string{"", "..hidden-dir", "dir", "dir/sub"}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"..a": "a\n", "...": "dots\n", "..hidden-dir/x": "x\n", "new\nline": "nl\n",
		"back\\slash": "bs\n", "quote\"s'": "q\n", "ünï €": "u\n", "tab\there": "t\n",
		strings.Repeat("l", 255): "l\n", "dir/-": "", "dir/sub/seven": "1234567",
		"dir/sub/eight": "12345678", "dir/sub/nine": "123456789",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "dir/run"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"dir/..link": "../..a", "nl-link": "new\nline", "abs": "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x/bin/x"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDumpPathGolden compares DumpPath with what nix-store --dump wrote of
// the same trees (testdata, regenerated with -update on a machine with
// Nix): a tree of hostile names, a lone file, a lone executable and a lone
// symlink.
func TestDumpPathGolden(t *testing.T) {
	cases := map[string]func(t *testing.T, p string){
		"hostile": func(t *testing.T, p string) { hostileTree(t, p) },
		"file":    func(t *testing.T, p string) { os.WriteFile(p, []byte("hello\n"), 0o644) },
		"exec":    func(t *testing.T, p string) { os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755) },
		"symlink": func(t *testing.T, p string) { os.Symlink("..a/b", p) },
		"empty":   func(t *testing.T, p string) { os.Mkdir(p, 0o755) },
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "root")
			build(t, p)
			golden := filepath.Join("testdata", name+".nar")
			if *update {
				out, err := exec.Command("nix-store", "--dump", p).Output()
				if err != nil {
					t.Fatalf("nix-store --dump: %v", err)
				}
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := nar.DumpPath(&got, p); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("DumpPath wrote %d bytes, nix-store --dump %d; they differ", got.Len(), len(want))
			}
			nartest.Compare(t, nartest.Read(t, got.Bytes()), nartest.Walk(t, p))
		})
	}
}

// TestDumpPathMatchesNixStoreDump compares DumpPath with the nix-store on
// PATH, live, on trees of every shape.
func TestDumpPathMatchesNixStoreDump(t *testing.T) {
	if _, err := exec.LookPath("nix-store"); err != nil {
		t.Skip("nix-store is not on PATH")
	}
	for i, spec := range append(nartest.TreeSeeds(), []byte("..a ... ..hidden names: every op, many bytes of spec to build a tree from")) {
		p := filepath.Join(t.TempDir(), "root")
		nartest.BuildTree(p, spec)
		want, err := exec.Command("nix-store", "--dump", p).Output()
		if err != nil {
			t.Fatalf("seed %d: nix-store --dump: %v", i, err)
		}
		var got bytes.Buffer
		if err := nar.DumpPath(&got, p); err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("seed %d: DumpPath wrote %d bytes, nix-store --dump %d; they differ", i, got.Len(), len(want))
		}
	}
}

// TestDumpPathRefusesOtherFiles: a NAR has no way to say "socket" or
// "device"; Nix refuses them too.
func TestDumpPathRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip(err)
	}
	if err := nar.DumpPath(&bytes.Buffer{}, dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v, want a refusal of the fifo", err)
	}
}

// TestDumpPathReportsWriteErrors: a failing writer stops the dump with its
// error (a full disk under the publisher's temp file).
func TestDumpPathReportsWriteErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "root")
	hostileTree(t, p)
	var full bytes.Buffer
	if err := nar.DumpPath(&full, p); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	for n := 0; n < full.Len(); n += 37 {
		w := &limitWriter{n: n, err: boom}
		if err := nar.DumpPath(w, p); !errors.Is(err, boom) {
			t.Fatalf("writer failing after %d bytes: err = %v", n, err)
		}
	}
}

type limitWriter struct {
	n   int
	err error
}

func (w *limitWriter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		k := w.n
		w.n = 0
		return k, w.err
	}
	w.n -= len(b)
	return len(b), nil
}

// go-nix's writer, where it copes, writes the same bytes: an independent
// implementation (it refuses names starting with "..", see the package doc).
func TestDumpPathAgreesWithGoNix(t *testing.T) {
	for i, spec := range nartest.TreeSeeds() {
		p := filepath.Join(t.TempDir(), "root")
		nartest.BuildTree(p, spec)
		var ours, theirs bytes.Buffer
		if err := nar.DumpPath(&ours, p); err != nil {
			t.Fatal(err)
		}
		if err := gonix.DumpPath(&theirs, p); err != nil {
			t.Fatalf("seed %d: go-nix: %v", i, err)
		}
		if !bytes.Equal(ours.Bytes(), theirs.Bytes()) {
			t.Errorf("seed %d: DumpPath and go-nix's disagree (%d vs %d bytes)", i, ours.Len(), theirs.Len())
		}
	}
}
