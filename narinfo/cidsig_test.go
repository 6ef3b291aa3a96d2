package narinfo

import (
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multibase"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

const (
	testCID  = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	otherCID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
)

// signedCID is minimal with testCID, signed by test-key-1.
func signedCID(t *testing.T) *NarInfo {
	t.Helper()
	n := mustParse(t, minimal+"IPFSHash: "+testCID+"\n")
	if err := n.SignCID(secretKey(t, "test-key-1")); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCIDFingerprint(t *testing.T) {
	n := signedCID(t)
	fp, err := n.CIDFingerprint()
	if err != nil {
		t.Fatal(err)
	}
	want := "nix-ipfs-cid-1;" + depPath + ";" + depHash + ";120;" + testCID
	if fp != want {
		t.Errorf("CIDFingerprint = %q, want %q", fp, want)
	}
	// The same CID in another multibase binds the same CID.
	b58 := *n
	b58.IPFSHash, err = cid.MustParse(testCID).StringOfBase(multibase.Base58BTC)
	if err != nil || b58.IPFSHash == testCID {
		t.Fatal(b58.IPFSHash, err)
	}
	if fp2, err := b58.CIDFingerprint(); err != nil || fp2 != want {
		t.Errorf("base58 form: %q, %v; want %q", fp2, err, want)
	}
	// Nix's own fingerprint starts "1;": the two can never be equal.
	nfp, err := n.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(nfp, "1;") || strings.HasPrefix(fp, "1;") {
		t.Errorf("fingerprints not domain-separated: %q, %q", nfp, fp)
	}
}

func TestSignCIDRoundTrip(t *testing.T) {
	n := signedCID(t)
	pk1 := publicKey(t, "test-key-1")
	if len(n.IPFSSigs) != 1 || !strings.HasPrefix(n.IPFSSigs[0], "test-key-1:") {
		t.Fatalf("IPFSSigs = %q", n.IPFSSigs)
	}
	// Through the text form and back.
	text := n.String()
	if !strings.HasSuffix(text, "IPFSHash: "+testCID+"\nIPFSSig: "+n.IPFSSigs[0]+"\n") {
		t.Errorf("IPFSSig not written right after IPFSHash:\n%s", text)
	}
	m := mustParse(t, text)
	if err := m.VerifyCID([]signature.PublicKey{pk1}); err != nil {
		t.Errorf("VerifyCID after a round trip: %v", err)
	}
	// Signing again changes nothing (deterministic, deduplicated).
	if err := m.SignCID(secretKey(t, "test-key-1")); err != nil || m.String() != text {
		t.Errorf("signing twice changed the narinfo (%v):\n%s", err, m.String())
	}
	// The Nix Sig is untouched by it, and vice versa.
	if err := m.Sign(secretKey(t, "test-key-1")); err != nil {
		t.Fatal(err)
	}
	if err := m.VerifyCID([]signature.PublicKey{pk1}); err != nil {
		t.Errorf("VerifyCID after adding a Sig: %v", err)
	}
	if !m.Verify([]signature.PublicKey{pk1}) {
		t.Error("Verify of the Sig next to an IPFSSig = false")
	}
}

func TestVerifyCIDRefusesTampering(t *testing.T) {
	pk := []signature.PublicKey{publicKey(t, "test-key-1")}
	for name, change := range map[string]func(n *NarInfo){
		"cid":  func(n *NarInfo) { n.IPFSHash = otherCID },
		"hash": func(n *NarInfo) { n.NarHash = "sha256:0000000000000000000000000000000000000000000000000000" },
		"size": func(n *NarInfo) { n.NarSize++ },
		"path": func(n *NarInfo) {
			n.StorePath = "/nix/store/00000000000000000000000000000000-nix-ipfs-fixture-dep"
		},
	} {
		t.Run(name, func(t *testing.T) {
			n := signedCID(t)
			change(n)
			err := n.VerifyCID(pk)
			if err == nil || !strings.Contains(err.Error(), "does not verify") {
				t.Errorf("VerifyCID after changing the %s = %v, want a refusal", name, err)
			}
		})
	}
	// Lines outside the fingerprint may change.
	n := signedCID(t)
	n.URL = "nar/elsewhere.nar"
	n.References = []string{"00000000000000000000000000000000-x"}
	n.Sigs = []string{"x:y"}
	if err := n.VerifyCID(pk); err != nil {
		t.Errorf("VerifyCID after changing lines outside the fingerprint: %v", err)
	}
}

func TestVerifyCIDKeys(t *testing.T) {
	n := signedCID(t)
	impostor, _, err := signature.GenerateKeypair("test-key-1", nil) // same name, other key
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		keys []signature.PublicKey
		want string
	}{
		{"no keys", nil, "not a trusted key"},
		{"unknown key", []signature.PublicKey{publicKey(t, "test-key-2")}, `"test-key-1": not a trusted key`},
		{"impostor", []signature.PublicKey{impostor.ToPublicKey()}, "does not verify"},
		{"among others", []signature.PublicKey{publicKey(t, "test-key-2"), impostor.ToPublicKey(), publicKey(t, "test-key-1")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := n.VerifyCID(tc.keys)
			if tc.want == "" {
				if err != nil {
					t.Errorf("VerifyCID = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("VerifyCID = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A Nix Sig replayed as an IPFSSig, by the same trusted key: refused.
	replay := signedCID(t)
	if err := replay.Sign(secretKey(t, "test-key-1")); err != nil {
		t.Fatal(err)
	}
	replay.IPFSSigs = replay.Sigs
	if err := replay.VerifyCID([]signature.PublicKey{publicKey(t, "test-key-1")}); err == nil {
		t.Error("a Nix Sig verified as an IPFSSig")
	}
	replay = signedCID(t)
	replay.Sigs = replay.IPFSSigs
	if replay.Verify([]signature.PublicKey{publicKey(t, "test-key-1")}) {
		t.Error("an IPFSSig verified as a Nix Sig")
	}
}

func TestVerifyCIDMalformed(t *testing.T) {
	pk := []signature.PublicKey{publicKey(t, "test-key-1")}
	if err := mustParse(t, minimal+"IPFSHash: "+testCID+"\n").VerifyCID(pk); !errors.Is(err, ErrNoIPFSSig) {
		t.Errorf("no IPFSSig: %v, want ErrNoIPFSSig", err)
	}
	good := signedCID(t).IPFSSigs[0]
	for name, text := range map[string]string{
		"not base64":      minimal + "IPFSHash: " + testCID + "\nIPFSSig: test-key-1:!!!\n",
		"no name":         minimal + "IPFSHash: " + testCID + "\nIPFSSig: nocolon\n",
		"short":           minimal + "IPFSHash: " + testCID + "\nIPFSSig: test-key-1:AAAA\n",
		"empty":           minimal + "IPFSHash: " + testCID + "\nIPFSSig: \n",
		"no IPFSHash":     minimal + "IPFSSig: " + good + "\n",
		"bad IPFSHash":    minimal + "IPFSHash: notacid\nIPFSSig: " + good + "\n",
		"bad StorePath":   strings.Replace(minimal, depPath, "/nix/store/x", 1) + "IPFSHash: " + testCID + "\nIPFSSig: " + good + "\n",
		"spaced IPFSHash": minimal + "IPFSHash: " + testCID + " \nIPFSSig: " + good + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			err := mustParse(t, text).VerifyCID(pk)
			if err == nil || errors.Is(err, ErrNoIPFSSig) {
				t.Errorf("VerifyCID = %v, want an error", err)
			}
		})
	}
	// Several IPFSSig lines parse (key rotation); one good one is enough.
	n := mustParse(t, minimal+"IPFSHash: "+testCID+"\nIPFSSig: test-key-1:AAAA\nIPFSSig: "+good+"\n")
	if len(n.IPFSSigs) != 2 {
		t.Fatalf("IPFSSigs = %q", n.IPFSSigs)
	}
	if err := n.VerifyCID(pk); err != nil {
		t.Errorf("VerifyCID with one malformed and one good IPFSSig: %v", err)
	}
}

// A hostile upstream's narinfo with thousands of IPFSSig lines by a
// trusted key costs at most maxCIDSigChecks verifications, and its error
// stays short enough to log.
func TestVerifyCIDBoundsWork(t *testing.T) {
	pk := []signature.PublicKey{publicKey(t, "test-key-1")}
	good := signedCID(t).IPFSSigs[0]
	impostor, _, err := signature.GenerateKeypair("test-key-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := signedCID(t)
	bad, err := impostor.Sign(nil, mustFingerprint(t, n))
	if err != nil {
		t.Fatal(err)
	}
	n.IPFSSigs = nil
	for i := 0; i < 10000; i++ {
		n.IPFSSigs = append(n.IPFSSigs, bad.String())
	}
	n.IPFSSigs = append(n.IPFSSigs, good)
	err = n.VerifyCID(pk)
	if err == nil || !strings.Contains(err.Error(), "9993 more IPFSSig lines not tried") {
		t.Errorf("VerifyCID of 10,000 bad signatures before the good one = %v, want it to stop after %d", err, maxCIDSigChecks)
	}
	if err != nil && len(err.Error()) > 2048 {
		t.Errorf("error is %d bytes long", len(err.Error()))
	}
	// A good signature among the first ones still counts.
	n.IPFSSigs = append([]string{bad.String(), good}, n.IPFSSigs...)
	if err := n.VerifyCID(pk); err != nil {
		t.Errorf("VerifyCID with the good signature second = %v", err)
	}
}

func mustFingerprint(t *testing.T, n *NarInfo) string {
	t.Helper()
	fp, err := n.CIDFingerprint()
	if err != nil {
		t.Fatal(err)
	}
	return fp
}
