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
	h := strings.Repeat("a", 32)
	for _, s := range []string{"/nix/store/" + h + "-x", "/nix/store/" + strings.Repeat("b", 32) + "-x", "/gnu/store/abc", "", "/nix/store/", "n", "t", "h"} {
		for _, hh := range []string{h, ""} {
			p := StorePath(s, hh)
			if got := StorePathText(p, hh); got != s {
				t.Errorf("store path %q (%q) came back %q", s, hh, got)
			}
			if !StorePathIs(p, hh, s) || (s != "" && StorePathIs(p, hh, s+"x")) || StorePathIs(p, hh, "/nix/store/"+strings.Repeat("c", 32)+"-x") {
				t.Errorf("StorePathIs(%q, %q)", s, hh)
			}
		}
	}
	if p := StorePath("/nix/store/"+h+"-x", h); len(p) != 3 || !UnderHash(p) {
		t.Errorf("packed %q", p)
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
}
