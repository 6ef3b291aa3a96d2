// Package nartest builds file trees of every shape NAR knows, for tests and
// fuzz targets of code that writes NARs (package nar, the publisher), dumps
// them checked against go-nix's writer (Dump), and lists what a NAR must
// say of a tree: the tree as it is on disk (Walk) and the NAR as go-nix's
// independent reader reads it (Read).
package nartest

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nar"

	ournar "github.com/nix-ipfs/nix-ipfs/nar"
)

// Dump returns the NAR of the tree at p as nar.DumpPath writes it, failing
// tb if it cannot, or if go-nix's writer, an independent implementation,
// copes with the tree (it refuses names starting with "..") and writes
// other bytes.
func Dump(tb testing.TB, p string) []byte {
	tb.Helper()
	var ours, theirs bytes.Buffer
	if err := ournar.DumpPath(&ours, p); err != nil {
		tb.Fatal(err)
	}
	if err := nar.DumpPath(&theirs, p); err == nil && !bytes.Equal(theirs.Bytes(), ours.Bytes()) {
		tb.Fatalf("nar.DumpPath and go-nix's disagree (%d vs %d bytes)", ours.Len(), theirs.Len())
	}
	return ours.Bytes()
}

// Entry is one node of a tree, as the NAR must describe it.
type Entry struct {
	Path    string
	Type    nar.NodeType
	Exec    bool
	Content string // sha256 of a file's content
	Size    int64
	Target  string
}

// Read lists the entries of the NAR b with go-nix's reader, failing tb if
// it does not read back.
func Read(tb testing.TB, b []byte) []Entry {
	tb.Helper()
	r, err := nar.NewReader(bytes.NewReader(b))
	if err != nil {
		tb.Fatalf("the NAR does not read back: %v", err)
	}
	defer r.Close()
	var out []Entry
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatalf("the NAR does not read back: %v", err)
		}
		e := Entry{Path: h.Path, Type: h.Type, Exec: h.Executable, Size: h.Size, Target: h.LinkTarget}
		if h.Type == nar.TypeRegular {
			s := sha256.New()
			n, err := io.Copy(s, r)
			if err != nil || n != h.Size {
				tb.Fatalf("%s: read %d of %d bytes: %v", h.Path, n, h.Size, err)
			}
			e.Content = string(s.Sum(nil))
		}
		out = append(out, e)
	}
}

// Walk lists the tree at root in NAR order: depth first, entries of a
// directory sorted by name bytes.
func Walk(tb testing.TB, root string) []Entry {
	tb.Helper()
	var out []Entry
	var walk func(fsPath, narPath string)
	walk = func(fsPath, narPath string) {
		fi, err := os.Lstat(fsPath)
		if err != nil {
			tb.Fatal(err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(fsPath)
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, Entry{Path: narPath, Type: nar.TypeSymlink, Target: target})
		case fi.IsDir():
			out = append(out, Entry{Path: narPath, Type: nar.TypeDirectory})
			ents, err := os.ReadDir(fsPath)
			if err != nil {
				tb.Fatal(err)
			}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			for _, n := range names {
				walk(filepath.Join(fsPath, n), path.Join(narPath, n))
			}
		default:
			b, err := os.ReadFile(fsPath)
			if err != nil {
				tb.Fatal(err)
			}
			s := sha256.Sum256(b)
			out = append(out, Entry{Path: narPath, Type: nar.TypeRegular, Exec: fi.Mode()&0o100 != 0, Content: string(s[:]), Size: int64(len(b))})
		}
	}
	walk(root, "/")
	return out
}

// Compare fails tb unless the entries a NAR holds are the tree's.
func Compare(tb testing.TB, got, want []Entry) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("NAR has %d entries, the tree %d:\n%v\n%v", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			tb.Fatalf("entry %d: NAR has %+v, the tree %+v", i, got[i], want[i])
		}
	}
}

// treeNames are the names BuildTree picks from: ordinary, and the ones NAR
// order and escaping get wrong most easily.
var treeNames = []string{
	"a", "b", "B", "a.b", "a-b", "-", "_", "..a", ".hidden", "é", "名前", "файл", "with space",
	"new\nline", "tab\there", "back\\slash", "quote\"s", "0", "00", "a0", "A", "Z", "z", strings.Repeat("l", 255),
}

// BuildTree makes a file tree at p from spec. The first byte picks the
// root: a file, an executable, a symlink or a directory; for a directory,
// each following byte is an operation (file, executable file, symlink,
// empty file, enter a new directory, leave it) with the next bytes as its
// name and content. It is bounded in entries, depth and size.
func BuildTree(p string, spec []byte) {
	next := func() byte {
		if len(spec) == 0 {
			return 0
		}
		b := spec[0]
		spec = spec[1:]
		return b
	}
	content := func() []byte {
		n := int(next()) * 13
		c := make([]byte, n)
		for i := range c {
			c[i] = byte(i*7) ^ next()
		}
		return c
	}
	target := func() string {
		switch next() % 4 {
		case 0:
			return treeNames[int(next())%len(treeNames)]
		case 1:
			return "../" + treeNames[int(next())%len(treeNames)]
		case 2:
			return "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-elsewhere/bin/x"
		}
		return "./" + treeNames[int(next())%len(treeNames)] + "/" + treeNames[int(next())%len(treeNames)]
	}
	switch len(spec) % 4 {
	case 0:
		os.WriteFile(p, content(), 0o644)
		return
	case 1:
		os.WriteFile(p, content(), 0o755)
		return
	case 2:
		os.Symlink(target(), p)
		return
	}
	os.Mkdir(p, 0o755)
	dirs := []string{p}
	for entries := 0; len(spec) > 0 && entries < 200; entries++ {
		dir := dirs[len(dirs)-1]
		op := next() % 6
		name := filepath.Join(dir, treeNames[int(next())%len(treeNames)])
		if _, err := os.Lstat(name); err == nil && op != 5 {
			continue
		}
		switch op {
		case 0:
			os.WriteFile(name, content(), 0o644)
		case 1:
			os.WriteFile(name, content(), 0o755)
		case 2:
			os.Symlink(target(), name)
		case 3:
			os.WriteFile(name, nil, 0o644)
		case 4:
			if len(dirs) < 10 && os.Mkdir(name, 0o755) == nil {
				dirs = append(dirs, name)
			}
		case 5:
			if len(dirs) > 1 {
				dirs = dirs[:len(dirs)-1]
			}
		}
	}
}

// TreeSeeds are specs for trees of every shape.
func TreeSeeds() [][]byte {
	return [][]byte{
		{},                       // an empty file
		{9},                      // an executable file
		{4, 1},                   // a symlink
		{3, 3, 3},                // an empty directory
		{0, 0, 10, 1, 2},         // one file
		{1, 4, 2, 1, 6, 7, 0, 5}, // nested
		[]byte("a tree of a few entries: files, links, dirs and back up again, with names and contents"),
		bytes.Repeat([]byte{4, 9, 0, 3, 1, 2, 2, 7, 5, 5}, 20),
	}
}
