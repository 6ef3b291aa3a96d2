package narinfo

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixhash"
)

const (
	depPath = "/nix/store/v46dga03kxwwmrgdwskijzc0zr3c0m89-nix-ipfs-fixture-dep"
	depHash = "sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h"
)

// minimal has only what Parse requires.
const minimal = "StorePath: " + depPath + "\nURL: nar/x.nar\nNarHash: " + depHash + "\nNarSize: 120\n"

func TestUnknownKeysKeptInOrder(t *testing.T) {
	in := "X-First: 1\n" +
		"StorePath: " + depPath + "\n" +
		"URL: nar/x.nar\n" +
		"Compression: none\n" +
		"X-Middle: two words\n" +
		"NarHash: " + depHash + "\n" +
		"NarSize: 120\n" +
		"References: \n" +
		"IPFSHash: bafkreiabc\n" +
		"CA: fixed:r:" + depHash + "\n" +
		"X-First: again\n" +
		"Lowercase-unknown: \n"
	n := mustParse(t, in)
	wantExtra := []Field{{"X-First", "1"}, {"X-Middle", "two words"}, {"X-First", "again"}, {"Lowercase-unknown", ""}}
	if !reflect.DeepEqual(n.Extra, wantExtra) {
		t.Errorf("Extra = %q, want %q", n.Extra, wantExtra)
	}
	if n.IPFSHash != "bafkreiabc" {
		t.Errorf("IPFSHash = %q", n.IPFSHash)
	}
	want := "StorePath: " + depPath + "\n" +
		"URL: nar/x.nar\n" +
		"Compression: none\n" +
		"NarHash: " + depHash + "\n" +
		"NarSize: 120\n" +
		"References: \n" +
		"CA: fixed:r:" + depHash + "\n" +
		"IPFSHash: bafkreiabc\n" +
		"X-First: 1\n" +
		"X-Middle: two words\n" +
		"X-First: again\n" +
		"Lowercase-unknown: \n"
	if got := n.String(); got != want {
		t.Errorf("String()\n got:\n%s\nwant:\n%s", got, want)
	}
	if !reflect.DeepEqual(mustParse(t, want), n) {
		t.Error("rewritten text parses to a different NarInfo")
	}
}

func TestIPFSHashAfterCA(t *testing.T) {
	n := mustParse(t, minimal+"IPFSHash: bafy\nSig: k:x\nCA: text:"+depHash+"\nSystem: x86_64-linux\n")
	s := n.String()
	iCA, iIPFS := strings.Index(s, "\nCA: "), strings.Index(s, "\nIPFSHash: ")
	if iCA < 0 || iIPFS < 0 || iIPFS < iCA || !strings.HasSuffix(s, "IPFSHash: bafy\n") {
		t.Errorf("IPFSHash not written right after CA:\n%s", s)
	}
}

func TestValueContainingColonSpace(t *testing.T) {
	n := mustParse(t, minimal+"System: x86_64-linux: really\nX-Note: a: b: c\nSig: key: with space\n")
	if n.System != "x86_64-linux: really" {
		t.Errorf("System = %q", n.System)
	}
	if want := []Field{{"X-Note", "a: b: c"}}; !reflect.DeepEqual(n.Extra, want) {
		t.Errorf("Extra = %q", n.Extra)
	}
	if want := []string{"key: with space"}; !reflect.DeepEqual(n.Sigs, want) {
		t.Errorf("Sigs = %q", n.Sigs)
	}
	if s := n.String(); !strings.Contains(s, "\nX-Note: a: b: c\n") || !strings.Contains(s, "\nSystem: x86_64-linux: really\n") {
		t.Errorf("values not written as read:\n%s", s)
	}
}

func TestCRLFAndNoTrailingNewline(t *testing.T) {
	want := mustParse(t, minimal+"References: a b\n")
	crlf := strings.ReplaceAll(minimal+"References: a b", "\n", "\r\n")
	if got := mustParse(t, crlf); !reflect.DeepEqual(got, want) {
		t.Errorf("CRLF: got %+v, want %+v", got, want)
	}
	if got := mustParse(t, "\n\n"+minimal+"\r\n\nReferences: a b"); !reflect.DeepEqual(got, want) {
		t.Errorf("blank lines, no final newline: got %+v, want %+v", got, want)
	}
}

func TestDefaults(t *testing.T) {
	n := mustParse(t, minimal)
	if n.Compression != "bzip2" {
		t.Errorf("absent Compression = %q, want bzip2 as Nix assumes", n.Compression)
	}
	if n.References != nil || n.Sigs != nil || n.Extra != nil {
		t.Errorf("empty lists should be nil: %+v", n)
	}
	if got := mustParse(t, minimal+"Compression: \n").Compression; got != "bzip2" {
		t.Errorf("empty Compression = %q, want bzip2", got)
	}
}

func TestReferencesSplitLikeNix(t *testing.T) {
	n := mustParse(t, minimal+"References:   a  b \n")
	if want := []string{"a", "b"}; !reflect.DeepEqual(n.References, want) {
		t.Errorf("References = %q, want %q", n.References, want)
	}
}

func TestFileSizeWithoutFileHashKept(t *testing.T) {
	n := mustParse(t, minimal+"FileSize: 7\n")
	if !strings.Contains(n.String(), "\nFileSize: 7\n") {
		t.Errorf("FileSize dropped:\n%s", n.String())
	}
}

func TestFingerprintSortsReferences(t *testing.T) {
	const (
		a = "0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a"
		b = "1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b"
		c = "zccccccccccccccccccccccccccccccc-c"
	)
	n := mustParse(t, minimal+"References: "+c+" "+a+" "+b+" "+a+"\n")
	fp, err := n.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	want := "1;" + depPath + ";" + depHash + ";120;/nix/store/" + a + ",/nix/store/" + b + ",/nix/store/" + c
	if fp != want {
		t.Errorf("Fingerprint\n got %s\nwant %s", fp, want)
	}
	// References stay as written: only the fingerprint is normalised.
	if n.References[0] != c {
		t.Errorf("Fingerprint reordered References: %q", n.References)
	}
}

func TestFingerprintUsesStoreDirOfStorePath(t *testing.T) {
	n := mustParse(t, "StorePath: /other/store/v46dga03kxwwmrgdwskijzc0zr3c0m89-x\nURL: u\nNarHash: "+depHash+
		"\nNarSize: 1\nReferences: v46dga03kxwwmrgdwskijzc0zr3c0m89-x\n")
	fp, err := n.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(fp, ";1;/other/store/v46dga03kxwwmrgdwskijzc0zr3c0m89-x") {
		t.Errorf("Fingerprint = %s", fp)
	}
}

func TestNarHashEncodings(t *testing.T) {
	h, err := nixhash.ParseAny(depHash, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := h.Digest()
	for _, s := range []string{
		depHash,
		"sha256:" + hex.EncodeToString(d),
		"sha256:" + base64.StdEncoding.EncodeToString(d),
		"sha256-" + base64.StdEncoding.EncodeToString(d),
	} {
		n := mustParse(t, strings.Replace(minimal, depHash, s, 1))
		if n.NarHash != s {
			t.Errorf("NarHash = %q, want it kept as written %q", n.NarHash, s)
		}
		got, err := n.NarHashNix32()
		if err != nil || got != depHash {
			t.Errorf("NarHashNix32(%q) = %q, %v; want %q", s, got, err, depHash)
		}
		if err := n.Validate(); err != nil {
			t.Errorf("Validate with NarHash %q: %v", s, err)
		}
	}
	for _, s := range []string{
		"1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h", // no prefix
		"sha1:" + hex.EncodeToString(d[:20]),
		"sha256:" + hex.EncodeToString(d[:31]),
		"sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8e", // 'e' is not nix32
	} {
		n := mustParse(t, strings.Replace(minimal, depHash, s, 1))
		if _, err := n.NarHashNix32(); err == nil {
			t.Errorf("NarHashNix32(%q) succeeded", s)
		}
		if _, err := n.Fingerprint(); err == nil {
			t.Errorf("Fingerprint with NarHash %q succeeded", s)
		}
		if err := n.Validate(); err == nil {
			t.Errorf("Validate with NarHash %q succeeded", s)
		}
	}
}

func TestParseErrors(t *testing.T) {
	big := minimal + strings.Repeat("X: y\n", MaxSize/5)
	tests := []struct {
		name     string
		in       string
		line     int
		key      string
		contains string
	}{
		{"missing StorePath", strings.Replace(minimal, "StorePath: "+depPath+"\n", "", 1), 0, "StorePath", "required"},
		{"missing URL", strings.Replace(minimal, "URL: nar/x.nar\n", "", 1), 0, "URL", "required"},
		{"missing NarHash", strings.Replace(minimal, "NarHash: "+depHash+"\n", "", 1), 0, "NarHash", "required"},
		{"missing NarSize", strings.Replace(minimal, "NarSize: 120\n", "", 1), 0, "NarSize", "required"},
		{"empty StorePath", strings.Replace(minimal, depPath, "", 1), 1, "StorePath", "empty"},
		{"empty URL", strings.Replace(minimal, "nar/x.nar", "", 1), 2, "URL", "empty"},
		{"NarSize 0", strings.Replace(minimal, "NarSize: 120", "NarSize: 0", 1), 4, "NarSize", "0"},
		{"bad number", strings.Replace(minimal, "NarSize: 120", "NarSize: 12a", 1), 4, "NarSize", "unsigned decimal"},
		{"negative number", minimal + "FileSize: -1\n", 5, "FileSize", "unsigned decimal"},
		{"plus sign", minimal + "FileSize: +1\n", 5, "FileSize", "unsigned decimal"},
		{"space in number", minimal + "FileSize:  1\n", 5, "FileSize", "unsigned decimal"},
		{"underscore in number", minimal + "FileSize: 1_000\n", 5, "FileSize", "unsigned decimal"},
		{"number too large", minimal + "FileSize: 18446744073709551616\n", 5, "FileSize", "unsigned decimal"},
		{"empty number", minimal + "FileSize: \n", 5, "FileSize", "unsigned decimal"},
		{"duplicate NarHash", minimal + "\nNarHash: " + depHash + "\n", 6, "NarHash", "duplicate (first on line 3)"},
		{"duplicate IPFSHash", minimal + "IPFSHash: a\nIPFSHash: b\n", 6, "IPFSHash", "duplicate"},
		{"duplicate References", minimal + "References: \nReferences: \n", 6, "References", "duplicate"},
		{"line without colon", minimal + "garbage\n", 5, "", "no \": \""},
		{"colon without space", minimal + "Deriver:x\n", 5, "", "no \": \""},
		{"bare key at end", minimal + "References:", 5, "", "no \": \""},
		{"empty key", minimal + ": v\n", 5, "", "empty key"},
		{"colon in key", minimal + "URL:x: y\n", 5, "URL:x", "contains ':'"},
		{"stray CR", minimal + "System: a\rb\n", 5, "", "carriage return"},
		{"NUL", minimal + "System: a\x00b\n", 5, "", "NUL"},
		{"oversize", big, 0, "", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through Parse, so the reader path (and its size limit) is used.
			n, err := Parse(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("no error; parsed %+v", n)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is %T, want *ParseError", err, err)
			}
			if pe.Line != tt.line || pe.Key != tt.key || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("got line %d key %q %q; want line %d key %q containing %q",
					pe.Line, pe.Key, err, tt.line, tt.key, tt.contains)
			}
			if tt.line > 0 && !strings.Contains(err.Error(), "line ") {
				t.Errorf("error %q does not name the line", err)
			}
		})
	}
}

func TestMaxSizeBoundary(t *testing.T) {
	in := []byte(minimal)
	in = append(in, bytes.Repeat([]byte("\n"), MaxSize-len(in))...)
	if _, err := Parse(bytes.NewReader(in)); err != nil {
		t.Errorf("exactly MaxSize bytes: %v", err)
	}
	if _, err := Parse(bytes.NewReader(append(in, '\n'))); err == nil {
		t.Error("MaxSize+1 bytes accepted")
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestParseReadError(t *testing.T) {
	if _, err := Parse(failingReader{}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	good := mustParse(t, minimal+
		"References: v46dga03kxwwmrgdwskijzc0zr3c0m89-nix-ipfs-fixture-dep\n"+
		"Deriver: m1m2bapmgmvrkpryzpi2ifsvzzwbykqx-nix-ipfs-fixture-dep.drv\n"+
		"FileHash: "+depHash+"\nCA: fixed:r:"+depHash+"\nIPFSHash: bafy\n")
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good): %v", err)
	}
	tests := []struct {
		name   string
		modify func(n *NarInfo)
		want   string
	}{
		{"relative StorePath", func(n *NarInfo) { n.StorePath = "nix/store/v46dga03kxwwmrgdwskijzc0zr3c0m89-x" }, "StorePath"},
		{"StorePath in /", func(n *NarInfo) { n.StorePath = "/v46dga03kxwwmrgdwskijzc0zr3c0m89-x" }, "StorePath"},
		{"short hash", func(n *NarInfo) { n.StorePath = "/nix/store/v46dga03kxwwmrgdwskijzc0zr3c0m8-x" }, "StorePath"},
		{"hash not nix32", func(n *NarInfo) { n.StorePath = "/nix/store/e46dga03kxwwmrgdwskijzc0zr3c0m89-x" }, "StorePath"},
		{"bad name", func(n *NarInfo) { n.StorePath = depPath + "/sub" }, "StorePath"},
		{"empty Compression", func(n *NarInfo) { n.Compression = "" }, "Compression"},
		{"empty URL", func(n *NarInfo) { n.URL = "" }, "URL"},
		{"bad FileHash", func(n *NarInfo) { n.FileHash = "sha256:zz" }, "FileHash"},
		{"NarSize 0", func(n *NarInfo) { n.NarSize = 0 }, "NarSize"},
		{"bad reference", func(n *NarInfo) { n.References = []string{"/nix/store/x"} }, "References"},
		{"empty reference", func(n *NarInfo) { n.References = []string{""} }, "References"},
		{"bad Deriver", func(n *NarInfo) { n.Deriver = "foo.drv" }, "Deriver"},
		{"bad Sig", func(n *NarInfo) { n.Sigs = []string{"k:notbase64!"} }, "Sig"},
		{"bad CA prefix", func(n *NarInfo) { n.CA = "sha256:" + depHash }, "CA"},
		{"text CA not sha256", func(n *NarInfo) { n.CA = "text:sha1:" + strings.Repeat("0", 40) }, "CA"},
		{"SRI CA", func(n *NarInfo) { n.CA = "fixed:r:sha256-" + strings.Repeat("A", 43) + "=" }, "CA"},
		{"IPFSHash space", func(n *NarInfo) { n.IPFSHash = "baf y" }, "IPFSHash"},
		{"newline in System", func(n *NarInfo) { n.System = "x\nStorePath: /evil" }, "System"},
		{"newline in Extra value", func(n *NarInfo) { n.Extra = []Field{{"X", "a\nb"}} }, "X"},
		{"known key in Extra", func(n *NarInfo) { n.Extra = []Field{{"NarHash", "x"}} }, "has its own field"},
		{"colon in Extra key", func(n *NarInfo) { n.Extra = []Field{{"A:B", "x"}} }, "Extra"},
		{"empty Extra key", func(n *NarInfo) { n.Extra = []Field{{"", "x"}} }, "Extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := *good
			tt.modify(&n)
			err := n.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	for _, ok := range []func(n *NarInfo){
		func(n *NarInfo) { n.Deriver = "unknown-deriver" },
		func(n *NarInfo) { n.CA = "text:" + depHash },
		func(n *NarInfo) { n.CA = "fixed:sha1:" + strings.Repeat("0", 40) },
		func(n *NarInfo) { n.FileHash = "sha512:" + strings.Repeat("0", 128) },
	} {
		n := *good
		ok(&n)
		if err := n.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", n, err)
		}
	}
}

func TestSignDoesNotAliasCallerSlice(t *testing.T) {
	n := mustParse(t, minimal)
	shared := make([]string, 1, 4)
	shared[0] = "zz:x"
	n.Sigs = shared
	sk := secretKey(t, "test-key-1")
	if err := n.Sign(sk); err != nil {
		t.Fatal(err)
	}
	if shared[0] != "zz:x" || len(n.Sigs) != 2 || !strings.HasPrefix(n.Sigs[0], "test-key-1:") {
		t.Errorf("shared = %q, Sigs = %q", shared[:cap(shared)], n.Sigs)
	}
}

func TestSignRefusesMalformed(t *testing.T) {
	sk := secretKey(t, "test-key-1")
	for _, modify := range []func(n *NarInfo){
		func(n *NarInfo) { n.StorePath = "relative" },
		func(n *NarInfo) { n.NarHash = "md5:" + strings.Repeat("0", 32) },
		func(n *NarInfo) { n.References = []string{"no-hash"} },
		func(n *NarInfo) { n.NarSize = 0 },
	} {
		n := mustParse(t, minimal)
		modify(n)
		if err := n.Sign(sk); err == nil {
			t.Errorf("Sign(%+v) succeeded", n)
		}
		if n.Sigs != nil {
			t.Errorf("failed Sign changed Sigs: %q", n.Sigs)
		}
	}
}
