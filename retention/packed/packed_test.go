package packed

import (
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// TestRoundTrip: every packed form unpacks to its text, canonical or not,
// and the binary forms are shorter.
func TestRoundTrip(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	h52 := nixbase32.EncodeToString(sum[:])
	for _, s := range []string{"/nix/store/" + strings.Repeat("a", 32) + "-x", "/gnu/store/abc", "", "/nix/store/", "n", "t"} {
		if got := StorePathText(StorePath(s)); got != s {
			t.Errorf("store path %q came back %q", s, got)
		}
		if !StorePathIs(StorePath(s), s) || (s != "" && StorePathIs(StorePath(s), s+"x")) {
			t.Errorf("StorePathIs(%q)", s)
		}
	}
	for _, s := range []string{"sha256:" + h52, "sha256:" + strings.Repeat("z", 52), "sha256:abc", "", "md5:x"} {
		if got := NarHashText(NarHash(s)); got != s {
			t.Errorf("NarHash %q came back %q", s, got)
		}
	}
	if p := NarHash("sha256:" + h52); len(p) != 33 {
		t.Errorf("NarHash packed in %d bytes", len(p))
	}
	for _, s := range []string{"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
		"BAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU", "not a cid", ""} {
		if got := CIDText(CID(s)); got != s {
			t.Errorf("CID %q came back %q", s, got)
		}
	}
	if p := CID("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"); len(p) != 37 {
		t.Errorf("CID packed in %d bytes", len(p))
	}
	for _, s := range []string{"nar/" + h52 + ".nar", "nar/" + h52 + ".nar.xz", "nar/" + h52, "nar/short.nar", "http://x/y", ""} {
		if got := NarURLText(NarURL(s)); got != s {
			t.Errorf("NAR URL %q came back %q", s, got)
		}
	}
	a, b := StorePath("/nix/store/aaa-x"), StorePath("/nix/store/bbb-x")
	if CompareStorePaths(a, b) >= 0 || CompareStorePaths(StorePath("/gnu/store/z"), a) >= 0 || CompareStorePaths(StorePath("/zzz/store/a"), a) <= 0 {
		t.Error("CompareStorePaths")
	}
}
