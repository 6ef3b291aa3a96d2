package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
)

// narSeeds returns NARs of small trees that use every NAR feature, as
// nar.DumpPath (byte-identical to nix-store --dump) writes them.
func narSeeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, spec := range treeSeeds() {
		dir := f.TempDir()
		p := filepath.Join(dir, "root")
		buildTree(p, spec)
		var buf bytes.Buffer
		if err := nar.DumpPath(&buf, p); err != nil {
			f.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// FuzzNARReader feeds arbitrary bytes to go-nix's NAR reader, the parser
// every NAR consumer of this project would use: it must neither panic nor
// hang, and every entry it yields must be a clean, valid, ordered path
// whose content is no longer than its header says. Seeds: NARs of every
// shape, truncated and corrupted ones, and testdata/fuzz/FuzzNARReader (a
// NAR written by nix-store --dump).
func FuzzNARReader(f *testing.F) {
	for _, n := range narSeeds(f) {
		f.Add(n)
		f.Add(n[:len(n)/2])
		c := bytes.Clone(n)
		c[len(c)/3] ^= 0x20
		f.Add(c)
	}
	f.Add([]byte{})
	f.Add([]byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := nar.NewReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		defer r.Close()
		prev := ""
		for i := 0; ; i++ {
			if i > len(data) {
				t.Fatalf("more entries (%d) than input bytes (%d)", i, len(data))
			}
			h, err := r.Next()
			if err != nil {
				return
			}
			if err := h.Validate(); err != nil {
				t.Fatalf("entry %q: %v", h.Path, err)
			}
			if path.Clean(h.Path) != h.Path || strings.Contains(h.Path, "/../") || strings.HasSuffix(h.Path, "/..") {
				t.Fatalf("entry path %q is not clean", h.Path)
			}
			if i > 0 && !nar.PathIsLexicographicallyOrdered(prev, h.Path) {
				t.Fatalf("entry %q after %q", h.Path, prev)
			}
			prev = h.Path
			n, err := io.Copy(io.Discard, r)
			if n > h.Size || (h.Type != nar.TypeRegular && n != 0) {
				t.Fatalf("entry %q (%v, size %d) yielded %d bytes (%v)", h.Path, h.Type, h.Size, n, err)
			}
		}
	})
}

// FuzzPublishedNARReadsBack builds a file tree from the fuzz input, has the
// real Publisher publish it (writeNAR: one stream into a SHA-256, the temp
// file that becomes nar/<hash>.nar, and IPFS), then reads the NAR in the
// cache back with go-nix's nar.NewReader: it must hold exactly the tree on
// disk (paths in NAR order, types, executable bits, contents, link targets)
// and match the narinfo and the CID; where go-nix's own writer copes with
// the tree, the bytes must be its bytes too. (Byte-identity with
// nix-store --dump is proven against real Nix by the integration tests.)
// testdata/fuzz holds the input that found go-nix's writer refusing "..a".
func FuzzPublishedNARReadsBack(f *testing.F) {
	for _, s := range treeSeeds() {
		f.Add(s)
	}
	sk, _, err := signature.GenerateKeypair("fuzz-1", nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, spec []byte) {
		root := t.TempDir()
		storeDir := filepath.Join(root, "store")
		sp := filepath.Join(storeDir, "0c6kzph7l0dcbfmjap64f0czdafn3b7x-fuzz")
		if err := os.MkdirAll(storeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		buildTree(sp, spec)
		want := walkTree(t, sp)

		var dump bytes.Buffer
		if err := dumpNAR(&dump, sp); err != nil {
			t.Fatal(err)
		}
		// go-nix's writer is an independent implementation, where it works
		// (it refuses names starting with "..": see dumpNAR).
		var gonix bytes.Buffer
		if err := nar.DumpPath(&gonix, sp); err == nil && !bytes.Equal(gonix.Bytes(), dump.Bytes()) {
			t.Fatalf("dumpNAR and nar.DumpPath disagree (%d vs %d bytes)", dump.Len(), gonix.Len())
		}
		sum := sha256.Sum256(dump.Bytes())
		narHash := "sha256:" + nixbase32.EncodeToString(sum[:])
		store := &narFuzzStore{dir: storeDir, info: nixstore.PathInfo{Path: sp, NarHash: narHash, NarSize: uint64(dump.Len())}}
		node := &narFuzzIPFS{}
		p, err := New(Options{Cache: Cache{Dir: filepath.Join(root, "cache")}, Key: sk, Params: ipfs.DefaultParams()}, store, node, nil)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := p.PublishPath(context.Background(), sp)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		nib, err := os.ReadFile(p.opt.Cache.NarInfoPath("0c6kzph7l0dcbfmjap64f0czdafn3b7x"))
		if err != nil {
			t.Fatal(err)
		}
		ni, err := narinfo.ParseBytes(nib)
		if err != nil {
			t.Fatalf("the narinfo written does not parse: %v", err)
		}
		written, err := os.ReadFile(p.opt.Cache.NarPath(ni.URL))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(written, dump.Bytes()) {
			t.Fatalf("the NAR in the cache (%d bytes) differs from a dump of the tree (%d)", len(written), dump.Len())
		}
		if ni.NarHash != narHash || ni.NarSize != uint64(len(written)) || ni.FileSize != ni.NarSize || ev.CID != ni.IPFSHash || ni.IPFSHash != rawCIDOf(written) {
			t.Fatalf("narinfo %+v / event CID %s do not describe the NAR", ni, ev.CID)
		}

		got := readNAR(t, written)
		if len(got) != len(want) {
			t.Fatalf("NAR has %d entries, the tree %d:\n%v\n%v", len(got), len(want), got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("entry %d: NAR has %+v, the tree %+v", i, got[i], want[i])
			}
		}
	})
}

// narEntry is one node of a tree, as the NAR must describe it.
type narEntry struct {
	Path    string
	Type    nar.NodeType
	Exec    bool
	Content string // sha256 of a file's content
	Size    int64
	Target  string
}

func readNAR(t *testing.T, b []byte) []narEntry {
	t.Helper()
	r, err := nar.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the published NAR does not read back: %v", err)
	}
	defer r.Close()
	var out []narEntry
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("the published NAR does not read back: %v", err)
		}
		e := narEntry{Path: h.Path, Type: h.Type, Exec: h.Executable, Size: h.Size, Target: h.LinkTarget}
		if h.Type == nar.TypeRegular {
			s := sha256.New()
			n, err := io.Copy(s, r)
			if err != nil || n != h.Size {
				t.Fatalf("%s: read %d of %d bytes: %v", h.Path, n, h.Size, err)
			}
			e.Content = string(s.Sum(nil))
		}
		out = append(out, e)
	}
}

// walkTree lists the tree at root in NAR order: depth first, entries of a
// directory sorted by name bytes.
func walkTree(t *testing.T, root string) []narEntry {
	t.Helper()
	var out []narEntry
	var walk func(fsPath, narPath string)
	walk = func(fsPath, narPath string) {
		fi, err := os.Lstat(fsPath)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(fsPath)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, narEntry{Path: narPath, Type: nar.TypeSymlink, Target: target})
		case fi.IsDir():
			out = append(out, narEntry{Path: narPath, Type: nar.TypeDirectory})
			ents, err := os.ReadDir(fsPath)
			if err != nil {
				t.Fatal(err)
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
				t.Fatal(err)
			}
			s := sha256.Sum256(b)
			out = append(out, narEntry{Path: narPath, Type: nar.TypeRegular, Exec: fi.Mode()&0o100 != 0, Content: string(s[:]), Size: int64(len(b))})
		}
	}
	walk(root, "/")
	return out
}

// treeNames are the names buildTree picks from: ordinary, and the ones NAR
// order and escaping get wrong most easily.
var treeNames = []string{
	"a", "b", "B", "a.b", "a-b", "-", "_", "..a", ".hidden", "é", "名前", "файл", "with space",
	"new\nline", "tab\there", "back\\slash", "quote\"s", "0", "00", "a0", "A", "Z", "z", strings.Repeat("l", 255),
}

// buildTree makes a file tree at p from spec. The first byte picks the
// root: a file, an executable, a symlink or a directory; for a directory,
// each following byte is an operation (file, executable file, symlink,
// empty file, enter a new directory, leave it) with the next bytes as its
// name and content. It is bounded in entries, depth and size.
func buildTree(p string, spec []byte) {
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

// treeSeeds are specs for trees of every shape.
func treeSeeds() [][]byte {
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

// rawCIDOf is the CID narFuzzIPFS gives data.
func rawCIDOf(data []byte) string {
	sum := sha256.Sum256(data)
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	return cid.NewCidV1(cid.Raw, mh).String()
}

// narFuzzStore serves one path's record.
type narFuzzStore struct {
	dir  string
	info nixstore.PathInfo
}

func (s *narFuzzStore) StoreDir() string { return s.dir }
func (s *narFuzzStore) QueryPathInfo(_ context.Context, p string) (*nixstore.PathInfo, error) {
	if p != s.info.Path {
		return nil, errs.E(errs.Invalid, nixstore.ErrNotValid)
	}
	c := s.info
	return &c, nil
}
func (s *narFuzzStore) Closure(_ context.Context, paths []string) ([]string, error) {
	return paths, nil
}
func (s *narFuzzStore) Close() error { return nil }

// narFuzzIPFS reads everything it is given and returns a raw CID of it.
type narFuzzIPFS struct{}

func (narFuzzIPFS) Add(_ context.Context, r io.Reader, _ ipfs.Params, _ bool) (cid.Cid, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return cid.Undef, err
	}
	return cid.Decode(rawCIDOf(b))
}
func (n narFuzzIPFS) AddFile(ctx context.Context, p string, prm ipfs.Params, pin bool) (cid.Cid, error) {
	f, err := os.Open(p)
	if err != nil {
		return cid.Undef, err
	}
	defer f.Close()
	return n.Add(ctx, f, prm, pin)
}
func (narFuzzIPFS) Self(context.Context) (ipfs.Node, error) {
	return ipfs.Node{PeerID: "12D3KooWfuzz"}, nil
}
