package narinfo

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Validate reports, joined, every problem that would make Nix refuse the
// file, make it impossible to sign or verify, or make String produce text
// that does not parse back to n. Parse does not call it: a tool that only
// copies narinfos along may want to keep ones it could not vouch for.
func (n *NarInfo) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("narinfo: %s: %s", key, fmt.Sprintf(format, args...)))
	}

	// Checked first for every field: a newline would end the line early, a
	// CR would be eaten as a line ending, a NUL is refused by Parse.
	for _, f := range n.fields() {
		if strings.ContainsAny(f.Value, "\n\r\x00") {
			bad(f.Key, "value contains a newline, carriage return or NUL")
		}
	}

	if err := storepath.Validate(path.Dir(n.StorePath), n.StorePath); err != nil {
		bad("StorePath", "%v", err)
	}
	if n.URL == "" {
		bad("URL", "empty")
	}
	// Nix reads an empty Compression as bzip2, so writing one would change
	// what the file means.
	if n.Compression == "" {
		bad("Compression", "empty (Nix would read it as bzip2)")
	}
	if n.FileHash != "" {
		if _, err := parseHash(n.FileHash); err != nil {
			bad("FileHash", "%q: %v", truncate(n.FileHash), err)
		}
	}
	// sha256 only: Nix writes nothing else, and the fingerprint needs it.
	if _, err := parseSHA256(n.NarHash); err != nil {
		bad("NarHash", "%q: %v", truncate(n.NarHash), err)
	}
	if n.NarSize == 0 {
		bad("NarSize", "0 (Nix treats it as missing)")
	}
	for _, r := range n.References {
		if err := storepath.ValidateBase(r); err != nil {
			bad("References", "%q: %v", truncate(r), err)
		}
	}
	// "unknown-deriver" is how old Nix wrote "none"; Nix still accepts it.
	if n.Deriver != "" && n.Deriver != "unknown-deriver" {
		if err := storepath.ValidateBase(n.Deriver); err != nil {
			bad("Deriver", "%q: %v", truncate(n.Deriver), err)
		}
	}
	for _, s := range n.Sigs {
		if _, err := signature.ParseSignature(s); err != nil {
			bad("Sig", "%q: %v", truncate(s), err)
		}
	}
	if n.CA != "" {
		if err := validateCA(n.CA); err != nil {
			bad("CA", "%q: %v", truncate(n.CA), err)
		}
	}
	if strings.IndexFunc(n.IPFSHash, unicode.IsSpace) >= 0 {
		bad("IPFSHash", "contains whitespace")
	}
	for _, f := range n.Extra {
		switch {
		case f.Key == "":
			bad("Extra", "empty key")
		case known[f.Key]:
			// It would be written twice and read back as a duplicate.
			bad("Extra", "key %q has its own field", f.Key)
		case strings.ContainsAny(f.Key, ":\n\r\x00"):
			bad("Extra", "key %q contains ':', a newline, carriage return or NUL", truncate(f.Key))
		}
	}
	return errors.Join(errs...)
}

// validateCA follows Nix 2.8's parseContentAddress: "text:sha256:<digest>"
// or "fixed:[r:]<algo>:<digest>", the digest in base16, nix32 or base64.
func validateCA(ca string) error {
	var algos func(nixhash.Algorithm) bool
	rest, ok := strings.CutPrefix(ca, "text:")
	if ok {
		algos = func(a nixhash.Algorithm) bool { return a == nixhash.SHA256 }
	} else if rest, ok = strings.CutPrefix(ca, "fixed:"); ok {
		rest, _ = strings.CutPrefix(rest, "r:")
		algos = func(nixhash.Algorithm) bool { return true }
	} else {
		return errors.New(`not "text:" or "fixed:"`)
	}
	algoName, digest, ok := strings.Cut(rest, ":")
	if !ok {
		return errors.New("no hash algorithm")
	}
	algo, err := nixhash.ParseAlgorithm(algoName)
	if err != nil {
		return err
	}
	if !algos(algo) {
		return fmt.Errorf("%s not allowed here", algo)
	}
	if strings.ContainsAny(digest, ":-") {
		return errors.New("malformed digest")
	}
	_, err = nixhash.ParseAny(digest, &algo)
	return err
}

// fields lists every value String writes, with the key it is written under.
func (n *NarInfo) fields() []Field {
	fs := []Field{
		{"StorePath", n.StorePath}, {"URL", n.URL}, {"Compression", n.Compression},
		{"FileHash", n.FileHash}, {"NarHash", n.NarHash}, {"Deriver", n.Deriver},
		{"System", n.System}, {"CA", n.CA}, {"IPFSHash", n.IPFSHash},
	}
	for _, r := range n.References {
		fs = append(fs, Field{"References", r})
	}
	for _, s := range n.Sigs {
		fs = append(fs, Field{"Sig", s})
	}
	return append(fs, n.Extra...)
}
