package narinfo

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MaxSize bounds what Parse reads. Real narinfos are a few hundred bytes plus
// about 50 per reference; a megabyte leaves room for huge closures while
// keeping a hostile server from making us buffer without limit.
const MaxSize = 1 << 20

// Field is a line whose key this package does not know.
type Field struct{ Key, Value string }

// NarInfo is one .narinfo file. Values are kept as written (hashes in
// whatever encoding the file used) so that rewriting a file changes nothing
// its author did not ask for.
type NarInfo struct {
	StorePath string // absolute: <storeDir>/<hash>-<name>
	URL       string // relative to the cache root, e.g. nar/<nix32>.nar
	// Compression of the file at URL. Parse turns an absent or empty value
	// into "bzip2", because that is what Nix assumes.
	Compression string
	FileHash    string // "sha256:<nix32>" as written, or "" if absent
	FileSize    uint64
	NarHash     string // as written; see NarHashNix32
	NarSize     uint64
	References  []string // basenames, as written; nil when there are none
	Deriver     string   // basename, or ""
	System      string
	// "keyname:base64", one per Sig line, as written. Nix would drop
	// duplicates and sort; Sign does both.
	Sigs     []string
	CA       string
	IPFSHash string // this project's extension: the CID of the NAR
	// "keyname:base64", one per IPFSSig line, as written: the publisher's
	// signatures binding IPFSHash to StorePath, NarHash and NarSize (see
	// CIDFingerprint). SignCID sorts them and drops duplicates.
	IPFSSigs []string
	Extra    []Field // unknown keys, in order of appearance
}

// ParseError locates a syntax error. Line is 1-based, or 0 when the problem
// is the file as a whole (too large, a required key missing).
type ParseError struct {
	Line int
	Key  string
	Msg  string
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("narinfo: ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, "key %q: ", e.Key)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Parse reads a narinfo of at most MaxSize bytes.
func Parse(r io.Reader) (*NarInfo, error) {
	// One byte more than allowed, so ParseBytes can tell "exactly MaxSize"
	// from "larger".
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("narinfo: read: %w", err)
	}
	return ParseBytes(b)
}

// ParseBytes parses the text of a narinfo. It checks syntax only; see
// Validate.
func ParseBytes(b []byte) (*NarInfo, error) {
	if len(b) > MaxSize {
		return nil, &ParseError{Msg: fmt.Sprintf("larger than %d bytes", MaxSize)}
	}
	// Nix's parser works on C++ strings and would not stop at a NUL, but
	// nothing legitimate contains one and many consumers (logs, C APIs) would
	// truncate at it.
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return nil, &ParseError{Line: bytes.Count(b[:i], []byte("\n")) + 1, Msg: "NUL byte"}
	}

	n := &NarInfo{}
	seen := make(map[string]int) // known key -> line it was first seen on
	lineNo := 0
	for len(b) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			continue
		}
		// A CR anywhere else would survive into a value, and a value ending
		// in CR could not be written back without being read as CRLF.
		if bytes.IndexByte(line, '\r') >= 0 {
			return nil, &ParseError{Line: lineNo, Msg: "carriage return inside a line"}
		}
		key, value, ok := strings.Cut(string(line), ": ")
		if !ok {
			return nil, &ParseError{Line: lineNo, Msg: fmt.Sprintf("no \": \" separator in %q", truncate(string(line)))}
		}
		if key == "" {
			return nil, &ParseError{Line: lineNo, Msg: "empty key"}
		}
		// Nix splits at the first ':' and skips one more byte, so for it
		// "URL:x: y" sets URL. Refusing such keys keeps us from reading a
		// file differently from Nix.
		if strings.IndexByte(key, ':') >= 0 {
			return nil, &ParseError{Line: lineNo, Key: key, Msg: "key contains ':'"}
		}
		if err := n.set(key, value, lineNo, seen); err != nil {
			return nil, err
		}
	}

	for _, k := range []string{"StorePath", "URL", "NarHash", "NarSize"} {
		if _, ok := seen[k]; !ok {
			return nil, &ParseError{Key: k, Msg: "required key missing"}
		}
	}
	// Nix treats an empty required value, and a NarSize of 0, as missing.
	if n.StorePath == "" {
		return nil, &ParseError{Line: seen["StorePath"], Key: "StorePath", Msg: "empty value"}
	}
	if n.URL == "" {
		return nil, &ParseError{Line: seen["URL"], Key: "URL", Msg: "empty value"}
	}
	if n.NarHash == "" {
		return nil, &ParseError{Line: seen["NarHash"], Key: "NarHash", Msg: "empty value"}
	}
	if n.NarSize == 0 {
		return nil, &ParseError{Line: seen["NarSize"], Key: "NarSize", Msg: "must not be 0"}
	}
	if n.Compression == "" {
		n.Compression = "bzip2"
	}
	return n, nil
}

// known lists the keys with a struct field. Everything else goes to Extra.
var known = map[string]bool{
	"StorePath": true, "URL": true, "Compression": true, "FileHash": true,
	"FileSize": true, "NarHash": true, "NarSize": true, "References": true,
	"Deriver": true, "System": true, "Sig": true, "CA": true, "IPFSHash": true,
	"IPFSSig": true,
}

func (n *NarInfo) set(key, value string, lineNo int, seen map[string]int) error {
	if !known[key] {
		n.Extra = append(n.Extra, Field{key, value})
		return nil
	}
	if key != "Sig" && key != "IPFSSig" {
		if first, dup := seen[key]; dup {
			return &ParseError{Line: lineNo, Key: key, Msg: fmt.Sprintf("duplicate (first on line %d)", first)}
		}
		seen[key] = lineNo
	}
	num := func(dst *uint64) error {
		// ParseUint in base 10 takes digits only: no sign, no underscores,
		// no spaces.
		v, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return &ParseError{Line: lineNo, Key: key, Msg: fmt.Sprintf("not an unsigned decimal number: %q", truncate(value))}
		}
		*dst = v
		return nil
	}
	switch key {
	case "StorePath":
		n.StorePath = value
	case "URL":
		n.URL = value
	case "Compression":
		n.Compression = value
	case "FileHash":
		n.FileHash = value
	case "FileSize":
		return num(&n.FileSize)
	case "NarHash":
		n.NarHash = value
	case "NarSize":
		return num(&n.NarSize)
	case "References":
		// Like Nix's tokenizeString(value, " "): runs of spaces separate,
		// nothing else does.
		n.References = strings.FieldsFunc(value, func(r rune) bool { return r == ' ' })
		if len(n.References) == 0 {
			n.References = nil
		}
	case "Deriver":
		n.Deriver = value
	case "System":
		n.System = value
	case "Sig":
		n.Sigs = append(n.Sigs, value)
	case "CA":
		n.CA = value
	case "IPFSHash":
		n.IPFSHash = value
	case "IPFSSig":
		n.IPFSSigs = append(n.IPFSSigs, value)
	}
	return nil
}

// String renders the file. See the package comment for the order.
func (n *NarInfo) String() string {
	var b strings.Builder
	line := func(k, v string) {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteByte('\n')
	}
	line("StorePath", n.StorePath)
	line("URL", n.URL)
	line("Compression", n.Compression)
	if n.FileHash != "" {
		line("FileHash", n.FileHash)
	}
	// Nix writes FileSize only together with FileHash; a FileSize read
	// without one is still written so that nothing parsed is dropped.
	if n.FileHash != "" || n.FileSize != 0 {
		line("FileSize", strconv.FormatUint(n.FileSize, 10))
	}
	line("NarHash", n.NarHash)
	line("NarSize", strconv.FormatUint(n.NarSize, 10))
	// Nix writes "References: " with the trailing space for an empty list.
	line("References", strings.Join(n.References, " "))
	if n.Deriver != "" {
		line("Deriver", n.Deriver)
	}
	if n.System != "" {
		line("System", n.System)
	}
	for _, s := range n.Sigs {
		line("Sig", s)
	}
	if n.CA != "" {
		line("CA", n.CA)
	}
	if n.IPFSHash != "" {
		line("IPFSHash", n.IPFSHash)
	}
	for _, s := range n.IPFSSigs {
		line("IPFSSig", s)
	}
	for _, f := range n.Extra {
		line(f.Key, f.Value)
	}
	return b.String()
}

// truncate keeps error messages short when a hostile file has huge lines.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
