package latest

import (
	"bytes"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// FuzzParse: no input crashes Parse or makes it accept a document that
// does not marshal back and parse to the same fingerprint.
func FuzzParse(f *testing.F) {
	sk, pk, err := signature.GenerateKeypair("cache-1", nil)
	if err != nil {
		f.Fatal(err)
	}
	d := New("proj:main:hello", time.Unix(1700000000, 0), 3, drv, 0, []string{out1, out2})
	if err := d.Sign(sk); err != nil {
		f.Fatal(err)
	}
	good, _ := d.Marshal()
	f.Add(good)
	f.Add([]byte(`{"type":"nixipfs.latestbuild.v1"}`))
	f.Add([]byte("[]"))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := Parse(bytes.NewReader(in), "")
		if err != nil {
			return
		}
		_ = d.Verify([]signature.PublicKey{pk})
		b, err := d.Marshal()
		if err != nil {
			t.Fatalf("parsed but does not marshal: %v", err)
		}
		d2, err := Parse(bytes.NewReader(b), "")
		if err != nil || d2.Fingerprint() != d.Fingerprint() {
			t.Fatalf("round trip: %v", err)
		}
	})
}
