package narinfo

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nix-ipfs/nix-ipfs/storepath"
)

var errNotSHA256 = errors.New("not a sha256 hash")

// NarHashNix32 returns NarHash as "sha256:<nix32>", the form Nix signs and
// compares, whatever encoding (base16, nix32, base64, SRI) the file used.
func (n *NarInfo) NarHashNix32() (string, error) {
	h, err := parseSHA256(n.NarHash)
	if err != nil {
		return "", fmt.Errorf("narinfo: NarHash %q: %w", truncate(n.NarHash), err)
	}
	return h.Format(nixhash.NixBase32, true), nil
}

// parseSHA256 accepts what Nix's Hash::parseAnyPrefixed accepts, limited to
// sha256: "sha256:" followed by base16, nix32 or base64, or SRI "sha256-".
func parseSHA256(s string) (*nixhash.HashWithEncoding, error) {
	h, err := parseHash(s)
	if err != nil {
		return nil, err
	}
	if h.Algo() != nixhash.SHA256 {
		return nil, errNotSHA256
	}
	return h, nil
}

// parseHash insists on an algorithm prefix: nixhash.ParseAny would otherwise
// accept a bare digest only when told the algorithm, and Nix never writes
// one bare in a narinfo.
func parseHash(s string) (*nixhash.HashWithEncoding, error) {
	if !strings.ContainsAny(s, ":-") {
		return nil, errors.New("no algorithm prefix")
	}
	return nixhash.ParseAny(s, nil)
}

// Fingerprint is the string a Sig signs, as Nix's
// ValidPathInfo::fingerprint builds it:
//
//	1;<StorePath>;sha256:<nix32 NarHash>;<NarSize>;<refs>
//
// where refs are the references as absolute paths, sorted and without
// duplicates (Nix holds them in a std::set), joined by commas. The store
// directory is StorePath's, since Nix refuses a narinfo whose StorePath is
// outside the cache's StoreDir.
func (n *NarInfo) Fingerprint() (string, error) {
	nar, err := n.fingerprintNAR()
	if err != nil {
		return "", err
	}
	storeDir := path.Dir(n.StorePath)
	refs := make([]string, 0, len(n.References))
	for _, r := range n.References {
		if err := storepath.ValidateBase(r); err != nil {
			return "", fmt.Errorf("narinfo: reference %q: %w", truncate(r), err)
		}
		refs = append(refs, storeDir+"/"+r)
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	return "1;" + nar + ";" + strings.Join(refs, ","), nil
}

// fingerprintNAR is the part both fingerprints share, checked as Nix
// checks it: "<StorePath>;sha256:<nix32 NarHash>;<NarSize>".
func (n *NarInfo) fingerprintNAR() (string, error) {
	if err := storepath.Validate(path.Dir(n.StorePath), n.StorePath); err != nil {
		return "", fmt.Errorf("narinfo: StorePath: %w", err)
	}
	narHash, err := n.NarHashNix32()
	if err != nil {
		return "", err
	}
	// Nix refuses too: a size of 0 means "unknown" to it.
	if n.NarSize == 0 {
		return "", errors.New("narinfo: NarSize is 0")
	}
	return n.StorePath + ";" + narHash + ";" + strconv.FormatUint(n.NarSize, 10), nil
}

// Sign adds sk's signature. Sigs end up sorted and without duplicates, as
// in Nix's std::set<std::string>, so signing twice with one key changes
// nothing (Ed25519 is deterministic) and our output matches Nix's.
func (n *NarInfo) Sign(sk signature.SecretKey) error {
	fp, err := n.Fingerprint()
	if err != nil {
		return err
	}
	n.Sigs, err = addSig(n.Sigs, sk, fp)
	return err
}

// addSig returns sigs with sk's signature of fp added, sorted and without
// duplicates, in a fresh slice: the caller may share the old backing array
// with a copy.
func addSig(sigs []string, sk signature.SecretKey, fp string) ([]string, error) {
	sig, err := sk.Sign(nil, fp)
	if err != nil {
		return sigs, fmt.Errorf("narinfo: sign: %w", err)
	}
	out := append(slices.Clone(sigs), sig.String())
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Verify reports whether any Sig is a valid signature by any of keys.
// Unparseable Sigs are skipped, as Nix skips them, rather than failing the
// lot: a cache may carry signatures from schemes we do not know.
func (n *NarInfo) Verify(keys []signature.PublicKey) bool {
	fp, err := n.Fingerprint()
	if err != nil {
		return false
	}
	for _, s := range n.Sigs {
		sig, err := signature.ParseSignature(s)
		if err != nil {
			continue
		}
		for _, k := range keys {
			if k.Verify(fp, sig) {
				return true
			}
		}
	}
	return false
}

// CIDFingerprintPrefix starts every CIDFingerprint. Nix's fingerprints
// start with "1;", so no string is both, and a Sig can never be replayed as
// an IPFSSig or the other way round.
const CIDFingerprintPrefix = "nix-ipfs-cid-1;"

// ErrNoIPFSSig is VerifyCID's answer for a narinfo without IPFSSig lines.
var ErrNoIPFSSig = errors.New("narinfo: no IPFSSig")

// CIDFingerprint is the string an IPFSSig signs:
//
//	nix-ipfs-cid-1;<StorePath>;sha256:<nix32 NarHash>;<NarSize>;<CID>
//
// with the CID in its canonical text form (go-cid's String), so that it is
// the CID itself that is bound, whatever multibase IPFSHash is written in.
// It says "the content of this CID is the NAR of this store path, with
// this hash and size": exactly what a reader of the CID relies on. The
// references are not in it; the Nix Sig covers them.
func (n *NarInfo) CIDFingerprint() (string, error) {
	nar, err := n.fingerprintNAR()
	if err != nil {
		return "", err
	}
	if n.IPFSHash == "" {
		return "", errors.New("narinfo: no IPFSHash")
	}
	c, err := cid.Decode(n.IPFSHash)
	if err != nil {
		return "", fmt.Errorf("narinfo: IPFSHash %q: %w", truncate(n.IPFSHash), err)
	}
	return CIDFingerprintPrefix + nar + ";" + c.String(), nil
}

// SignCID adds sk's IPFSSig. Like Sign, IPFSSigs end up sorted and without
// duplicates, so signing twice changes nothing.
func (n *NarInfo) SignCID(sk signature.SecretKey) error {
	fp, err := n.CIDFingerprint()
	if err != nil {
		return err
	}
	n.IPFSSigs, err = addSig(n.IPFSSigs, sk, fp)
	return err
}

// A narinfo comes from an upstream that may be hostile: it could carry
// thousands of IPFSSig lines naming a trusted key, each an Ed25519 check.
// VerifyCID checks at most maxCIDSigChecks of them (a real publisher
// writes one per key) and reports at most maxCIDSigReasons failures.
const (
	maxCIDSigChecks  = 8
	maxCIDSigReasons = 4
)

// VerifyCID returns nil if an IPFSSig is a valid signature by one of keys
// of this narinfo's CIDFingerprint. Otherwise it says why not, for a log
// line: ErrNoIPFSSig, a fingerprint that cannot be built, or, for each
// IPFSSig, that it does not parse, is by a key not given, or does not
// verify.
func (n *NarInfo) VerifyCID(keys []signature.PublicKey) error {
	if len(n.IPFSSigs) == 0 {
		return ErrNoIPFSSig
	}
	fp, err := n.CIDFingerprint()
	if err != nil {
		return err
	}
	var why []string
	tried, untried := 0, ""
	for i, s := range n.IPFSSigs {
		if tried == maxCIDSigChecks {
			untried = fmt.Sprintf("; %d more IPFSSig lines not tried (at most %d signatures by trusted keys are checked)", len(n.IPFSSigs)-i, maxCIDSigChecks)
			break
		}
		sig, err := signature.ParseSignature(s)
		if err != nil {
			why = append(why, fmt.Sprintf("IPFSSig %q: %v", truncate(s), err))
			continue
		}
		trusted := false
		for _, k := range keys {
			if k.Name != sig.Name {
				continue
			}
			trusted = true
			tried++
			if k.Verify(fp, sig) {
				return nil
			}
		}
		if trusted {
			why = append(why, fmt.Sprintf("IPFSSig by %q does not verify for this StorePath, NarHash, NarSize and IPFSHash", truncate(sig.Name)))
		} else {
			why = append(why, fmt.Sprintf("IPFSSig by %q: not a trusted key", truncate(sig.Name)))
		}
	}
	if len(why) > maxCIDSigReasons {
		why = append(why[:maxCIDSigReasons], fmt.Sprintf("and %d more like them", len(why)-maxCIDSigReasons))
	}
	return fmt.Errorf("narinfo: %s%s", strings.Join(why, "; "), untried)
}

// ParsePublicKeys reads keys in nix.conf's trusted-public-keys syntax:
// "name:base64" public keys separated by whitespace. Its errors name the
// flag that setting is given by everywhere here.
func ParsePublicKeys(s string) ([]signature.PublicKey, error) {
	var keys []signature.PublicKey
	for _, f := range strings.Fields(s) {
		k, err := signature.ParsePublicKey(f)
		if err != nil {
			return nil, fmt.Errorf("--trusted-public-keys: %q: %w", f, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
