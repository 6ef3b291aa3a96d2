package narinfo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// The fixtures were written by Nix itself (testdata/make-fixtures.sh): those
// in testdata/ by Debian 12's Nix 2.8.0, those in testdata/nix-2.26/ by
// Debian trixie's Nix 2.26.3 from the same derivations and the same keys.
// They are the oracle for String, Fingerprint and Sign.

// fixtureDirs are the fixture directories, one per Nix version.
var fixtureDirs = []struct{ dir, nix string }{
	{"testdata", "2.8.0"},
	{"testdata/nix-2.26", "2.26.3"},
}

type fixture struct {
	name string
	text string
}

func fixtures(t testing.TB) []fixture {
	t.Helper()
	var fs []fixture
	for _, d := range fixtureDirs {
		paths, err := filepath.Glob(filepath.Join(d.dir, "*.narinfo"))
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) < 5 {
			t.Fatalf("expected at least 5 fixtures in %s, found %d", d.dir, len(paths))
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			name, _ := filepath.Rel("testdata", p)
			fs = append(fs, fixture{name, string(b)})
		}
	}
	return fs
}

func readKey(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func secretKey(t *testing.T, name string) signature.SecretKey {
	t.Helper()
	sk, err := signature.LoadSecretKey(readKey(t, name+".sk"))
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

func publicKey(t *testing.T, name string) signature.PublicKey {
	t.Helper()
	pk, err := signature.ParsePublicKey(readKey(t, name+".pk"))
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

func mustParse(t *testing.T, s string) *NarInfo {
	t.Helper()
	n, err := ParseBytes([]byte(s))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, s)
	}
	return n
}

func TestGoldenRoundTrip(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			n := mustParse(t, f.text)
			if got := n.String(); got != f.text {
				t.Errorf("String() differs from what Nix wrote\n got:\n%s\nwant:\n%s", got, f.text)
			}
			if err := n.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if len(n.Extra) != 0 {
				t.Errorf("Extra = %v, want none", n.Extra)
			}
		})
	}
}

// Nix 2.8 writes an empty reference list as "References: " with the space.
func TestGoldenEmptyReferencesLine(t *testing.T) {
	b, err := os.ReadFile("testdata/dep.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nReferences: \n") {
		t.Fatalf("fixture changed: no %q line", "References: ")
	}
	n := mustParse(t, string(b))
	if n.References != nil {
		t.Errorf("References = %#v, want nil", n.References)
	}
}

func TestGoldenFingerprint(t *testing.T) {
	b, err := os.ReadFile("testdata/app.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := mustParse(t, string(b))
	got, err := n.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	want := "1;/nix/store/61962fqnp9z8ha3rl84py49gjlar27nj-nix-ipfs-fixture-app;" +
		"sha256:1rwlbfr8rci9hkhkj12n43lbhhig3rmacw5p4jr1pwxsxfggwh54;248;" +
		"/nix/store/61962fqnp9z8ha3rl84py49gjlar27nj-nix-ipfs-fixture-app," +
		"/nix/store/v46dga03kxwwmrgdwskijzc0zr3c0m89-nix-ipfs-fixture-dep"
	if got != want {
		t.Errorf("Fingerprint\n got %s\nwant %s", got, want)
	}
}

// Signing with the key Nix used must reproduce Nix's Sig line exactly, in
// Nix's position among the other Sigs.
func TestGoldenSign(t *testing.T) {
	sk := secretKey(t, "test-key-1")
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			n := mustParse(t, f.text)
			var kept []string
			for _, s := range n.Sigs {
				if !strings.HasPrefix(s, "test-key-1:") {
					kept = append(kept, s)
				}
			}
			if len(kept) == len(n.Sigs) {
				t.Fatal("fixture has no test-key-1 signature")
			}
			m := *n
			m.Sigs = kept
			if err := m.Sign(sk); err != nil {
				t.Fatal(err)
			}
			if got := m.String(); got != f.text {
				t.Errorf("after Sign\n got:\n%s\nwant:\n%s", got, f.text)
			}
			// Signing again must not add a second, identical Sig line.
			if err := m.Sign(sk); err != nil {
				t.Fatal(err)
			}
			if got := m.String(); got != f.text {
				t.Errorf("after second Sign\n got:\n%s\nwant:\n%s", got, f.text)
			}
		})
	}
}

func TestGoldenSignSortsLikeNix(t *testing.T) {
	// lone.narinfo carries test-key-1 and test-key-2; Nix put them in byte
	// order. Sign test-key-2 last, so appending alone would get it wrong.
	b, err := os.ReadFile("testdata/lone.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	want := string(b)
	n := mustParse(t, want)
	if len(n.Sigs) != 2 {
		t.Fatalf("fixture changed: %d Sigs, want 2", len(n.Sigs))
	}
	n.Sigs = []string{n.Sigs[1]} // only test-key-2's
	if err := n.Sign(secretKey(t, "test-key-1")); err != nil {
		t.Fatal(err)
	}
	if got := n.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	n.Sigs = nil
	if err := n.Sign(secretKey(t, "test-key-2")); err != nil {
		t.Fatal(err)
	}
	if err := n.Sign(secretKey(t, "test-key-1")); err != nil {
		t.Fatal(err)
	}
	if got := n.String(); got != want {
		t.Errorf("signed 2 then 1:\n%s\nwant:\n%s", got, want)
	}
}

func TestGoldenVerify(t *testing.T) {
	pk1 := publicKey(t, "test-key-1")
	pk2 := publicKey(t, "test-key-2")
	other, _, err := signature.GenerateKeypair("test-key-1", nil) // same name, other key
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			n := mustParse(t, f.text)
			if !n.Verify([]signature.PublicKey{pk1}) {
				t.Error("Verify with test-key-1 = false")
			}
			if n.Verify([]signature.PublicKey{other.ToPublicKey()}) {
				t.Error("Verify with an impostor key of the same name = true")
			}
			if n.Verify(nil) {
				t.Error("Verify with no keys = true")
			}
			wantPK2 := filepath.Base(f.name) == "lone.narinfo"
			if got := n.Verify([]signature.PublicKey{pk2}); got != wantPK2 {
				t.Errorf("Verify with test-key-2 = %v, want %v", got, wantPK2)
			}

			size := *n
			size.NarSize++
			if size.Verify([]signature.PublicKey{pk1, pk2}) {
				t.Error("Verify after changing NarSize = true")
			}

			ref := *n
			// A valid basename that is not in the original list.
			const intruder = "00000000000000000000000000000000-intruder"
			if len(n.References) > 0 {
				ref.References = append([]string{intruder}, n.References[1:]...)
			} else {
				ref.References = []string{intruder}
			}
			if ref.Verify([]signature.PublicKey{pk1, pk2}) {
				t.Error("Verify after changing a reference = true")
			}

			// Lines outside the fingerprint may change freely: that is what
			// lets us add IPFSHash to a narinfo Nix signed.
			ext := *n
			ext.IPFSHash = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
			ext.URL = "nar/elsewhere.nar"
			ext.Extra = []Field{{"X-Anything", "1"}}
			if !ext.Verify([]signature.PublicKey{pk1}) {
				t.Error("Verify after changing lines outside the fingerprint = false")
			}
		})
	}
}

// TestGoldenNixVersionsAgree: for the same store paths and keys, Nix 2.26.3
// wrote every narinfo byte for byte as Nix 2.8.0 did (field order, the
// "References: " line with its space when empty, CA, the xz FileHash, the
// order of two Sigs), so one writer serves both.
func TestGoldenNixVersionsAgree(t *testing.T) {
	base, other := fixtureDirs[0], fixtureDirs[1]
	paths, err := filepath.Glob(filepath.Join(other.dir, "*.narinfo"))
	if err != nil || len(paths) < 5 {
		t.Fatalf("fixtures in %s: %d, %v", other.dir, len(paths), err)
	}
	for _, p := range paths {
		name := filepath.Base(p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		a, err := os.ReadFile(filepath.Join(base.dir, name))
		if err != nil {
			t.Fatalf("Nix %s wrote %s, Nix %s has no such fixture: %v", other.nix, name, base.nix, err)
		}
		if string(a) != string(b) {
			t.Errorf("%s: Nix %s wrote\n%s\nNix %s wrote\n%s", name, base.nix, a, other.nix, b)
		}
	}
}
