package narinfo

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// FuzzParse checks that Parse never panics and that String is a fixed
// point: whatever Parse accepts, String writes text that parses back to the
// same NarInfo and is rewritten identically. The other methods must not
// panic on anything Parse accepts either.
func FuzzParse(f *testing.F) {
	paths, err := filepath.Glob("testdata/*.narinfo")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		minimal,
		minimal + "IPFSHash: bafy\nX-Extra: a: b\n",
		minimal + "IPFSHash: bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy\nIPFSSig: test-key-1:2wpWl8b4cLC4K6/ne8p7BI63VCvmuAHO0oeYaxMZ3wqo+WLp2pJmcDuJvPRUHi/hG0JJhM7hn5fzXAsPzl8dCA==\n",
		minimal + "IPFSSig: b:c\nIPFSSig: a:b\nIPFSSig: \n",
		minimal + "IPFSHash: notacid\nIPFSSig: test-key-1:AAAA\n",
		minimal + "References:  a  b \nSig: \nSig: \nFileSize: 0\n",
		"StorePath: /nix/store/x\r\nURL: u\r\nNarHash: h\r\nNarSize: 1",
		minimal + "NarHash: dup\n",
		minimal + "no separator\n",
		minimal + "URL:x: y\n",
		minimal + "Compression: \nFileHash: \nDeriver: \n",
		"",
		"\n\r\n",
		": \n",
		minimal + "NarSize: 99999999999999999999\n",
		minimal + "System: a\x00\n",
	} {
		f.Add([]byte(s))
	}
	pkText, err := os.ReadFile("testdata/test-key-1.pk")
	if err != nil {
		f.Fatal(err)
	}
	pk, err := signature.ParsePublicKey(strings.TrimSpace(string(pkText)))
	if err != nil {
		f.Fatal(err)
	}
	keys := []signature.PublicKey{pk}
	// A narinfo whose IPFSSig is valid, for the fuzzer to start from.
	skText, err := os.ReadFile("testdata/test-key-1.sk")
	if err != nil {
		f.Fatal(err)
	}
	sk, err := signature.LoadSecretKey(strings.TrimSpace(string(skText)))
	if err != nil {
		f.Fatal(err)
	}
	signed, err := ParseBytes([]byte(minimal + "IPFSHash: bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy\n"))
	if err != nil {
		f.Fatal(err)
	}
	if err := signed.SignCID(sk); err != nil {
		f.Fatal(err)
	}
	if err := signed.VerifyCID(keys); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(signed.String()))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseBytes(b)
		if err != nil {
			return
		}
		// Must not panic; their results are not the property under test.
		_ = n.Validate()
		_, _ = n.Fingerprint()
		_, _ = n.NarHashNix32()
		_ = n.Verify(nil)
		_, _ = n.CIDFingerprint()
		_ = n.VerifyCID(keys) // seeds name test-key-1: the verify path runs

		s := n.String()
		m, err := ParseBytes([]byte(s))
		if err != nil {
			t.Fatalf("String() output does not parse: %v\ninput: %q\noutput: %q", err, b, s)
		}
		if !reflect.DeepEqual(n, m) {
			t.Fatalf("String() is not a fixed point\ninput: %q\nfirst:  %#v\nsecond: %#v", b, n, m)
		}
		if s2 := m.String(); s2 != s {
			t.Fatalf("rewrite differs\nfirst:  %q\nsecond: %q", s, s2)
		}
	})
}
