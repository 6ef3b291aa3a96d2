// Package nar writes the Nix Archive (NAR) format: the serialisation of a
// file tree that Nix hashes (NarHash), signs and ships in binary caches. A
// NAR keeps only what Nix keeps of a tree: entry names, file contents, the
// owner's executable bit and symlink targets; no times, owners or other
// modes, so the same tree always gives the same bytes.
//
// The API follows go-nix's pkg/nar (and archive/tar): DumpPath streams the
// NAR of a path on disk into an io.Writer. It stands in for go-nix's
// nar.DumpPath, whose writer refuses every directory entry whose name
// starts with ".." ("..a", "...", legal in Nix) as if it led out of the
// directory: a store path holding one could never be published, and its
// event was retried for ever (TestHostileStorePathNames in integration/,
// FuzzPublishedNARReadsBack in publisher/, FuzzDumpPath here). Reading
// NARs is left to go-nix's nar.NewReader, which this package's tests use
// as an independent check.
package nar

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// magic opens every NAR.
const magic = "nix-archive-1"

// DumpPath writes the NAR serialisation of the file tree at path: byte for
// byte what nix-store --dump writes (entries sorted by name, executable
// when the owner may execute, symlink targets as they are).
//
// It emits every framing token (a length, a name, padding) as a Write of
// its own, as go-nix's writer does: callers writing to a file or a network
// stream should put a bufio.Writer in between.
func DumpPath(w io.Writer, path string) error {
	if err := writeStrings(w, magic); err != nil {
		return err
	}
	return dumpNode(w, path)
}

func dumpNode(w io.Writer, p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return writeStrings(w, "(", "type", "symlink", "target", target, ")")
	case fi.IsDir():
		if err := writeStrings(w, "(", "type", "directory"); err != nil {
			return err
		}
		ents, err := os.ReadDir(p) // sorted by name bytes, as Nix sorts
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := writeStrings(w, "entry", "(", "name", e.Name(), "node"); err != nil {
				return err
			}
			if err := dumpNode(w, filepath.Join(p, e.Name())); err != nil {
				return err
			}
			if err := writeStrings(w, ")"); err != nil {
				return err
			}
		}
		return writeStrings(w, ")")
	case fi.Mode().IsRegular():
		return dumpFile(w, p, fi)
	}
	return fmt.Errorf("%s: not a regular file, directory or symlink (%v)", p, fi.Mode().Type())
}

func dumpFile(w io.Writer, p string, fi os.FileInfo) error {
	if err := writeStrings(w, "(", "type", "regular"); err != nil {
		return err
	}
	if fi.Mode()&0o100 != 0 {
		if err := writeStrings(w, "executable", ""); err != nil {
			return err
		}
	}
	if err := writeStrings(w, "contents"); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(fi.Size()))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if c, err := io.CopyN(w, f, fi.Size()); err != nil {
		return fmt.Errorf("%s: read %d of %d bytes: %w", p, c, fi.Size(), err)
	}
	if err := pad(w, fi.Size()); err != nil {
		return err
	}
	return writeStrings(w, ")")
}

// writeStrings writes each string as NAR does: its length as a
// little-endian uint64, its bytes, zeros up to a multiple of 8.
func writeStrings(w io.Writer, ss ...string) error {
	var n [8]byte
	for _, s := range ss {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := io.WriteString(w, s); err != nil {
			return err
		}
		if err := pad(w, int64(len(s))); err != nil {
			return err
		}
	}
	return nil
}

func pad(w io.Writer, n int64) error {
	if r := n % 8; r != 0 {
		var zero [8]byte
		_, err := w.Write(zero[:8-r])
		return err
	}
	return nil
}
