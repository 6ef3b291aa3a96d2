// Package latest is the latest-build document: for each job, a small JSON
// file in the binary cache naming the outputs of the job's latest
// successful build, signed with the cache's key. Fleets that deploy by
// pulling (as Hydra's /job/<project>/<jobset>/<job>/latest and Cachix
// Deploy are used) read it, check the signature, and copy the closure
// through the substituter.
//
// The publisher writes nix-ipfs-latest/<job>.json beside the narinfos once
// every output of a build is published; serve, a mirror's --listen and the
// substituter serve it like any cache file. A reader trusts nothing about
// the transport: Verify checks the signature over a fingerprint that binds
// the job, the build's time and sequence and its outputs, and a State
// refuses a document older than one it has already accepted for that job,
// so an upstream cannot roll a fleet back by replaying an old, validly
// signed document.
package latest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Type is the version this code writes and reads. A later version is
// refused: its signature may cover fields this code cannot check.
const Type = "nixipfs.latestbuild.v1"

// Dir is the documents' directory in the cache root (package cachedir
// owns the layout).
const Dir = cachedir.LatestDirName

// Bounds a reader applies; the writer keeps within them.
const (
	MaxSize    = 64 << 10
	MaxOutputs = 1024
	MaxSigs    = 8
)

// FingerprintPrefix starts every fingerprint, so that no Nix fingerprint
// ("1;...") or IPFSSig fingerprint ("nix-ipfs-cid-1;...") is also one, and
// no signature can be replayed from one to the other.
const FingerprintPrefix = "nix-ipfs-latest-1;"

// Doc is one job's latest build.
type Doc struct {
	// Type is "nixipfs.latestbuild.v1".
	Type string `json:"type" jsonschema:"const=nixipfs.latestbuild.v1"`
	// Job is Hydra's project:jobset:job, or the derivation's name without
	// its version (as retention names jobs).
	Job string `json:"job" jsonschema:"pattern=^[A-Za-z0-9_+][A-Za-z0-9._+:-]{0\\,254}$"`
	// Built is when the build was reported (the "built" event's time).
	Built time.Time `json:"built"`
	// Seq is the "built" event's stream sequence: it orders two builds
	// reported in the same instant.
	Seq uint64 `json:"seq"`
	// DrvPath is the derivation, when known.
	DrvPath string `json:"drv_path,omitempty" jsonschema:"maxLength=4096"`
	// HydraBuild is Hydra's build id, when the build came from Hydra.
	HydraBuild int64 `json:"hydra_build,omitempty" jsonschema:"minimum=0"`
	// Outputs are the build's output paths, sorted.
	Outputs []string `json:"outputs" jsonschema:"minItems=1,maxItems=1024"`
	// Sigs are signatures of Fingerprint, "keyname:base64", by the cache's
	// keys.
	Sigs []string `json:"sigs" jsonschema:"minItems=1,maxItems=8"`
}

// FileName is the document's path in the cache, relative to its root.
func FileName(job string) string { return cachedir.LatestName(job) }

// ValidJob says why job cannot name a document, or nil. A job name is
// Hydra's project:jobset:job (whose parts are identifiers, a job's with
// dots), or a derivation name without its version; it is also the
// document's file name, so no '/' and no leading dot.
func ValidJob(job string) error {
	if !cachedir.ValidJob(job) {
		return errs.Errorf(errs.Invalid, "latest: job %q: want letters, digits and ._+:- (at most 255), not starting with a dot or dash", trunc(job))
	}
	return nil
}

// New returns the unsigned document for a build of job with outputs.
func New(job string, built time.Time, seq uint64, drvPath string, hydraBuild int64, outputs []string) *Doc {
	outs := slices.Clone(outputs)
	slices.Sort(outs)
	return &Doc{Type: Type, Job: job, Built: built.UTC(), Seq: seq, DrvPath: drvPath, HydraBuild: hydraBuild, Outputs: slices.Compact(outs)}
}

// Fingerprint is the string a signature signs:
//
//	nix-ipfs-latest-1;<job>;<built, Unix ns>;<seq>;<drv path>;<hydra build>;<outputs, comma-joined>
func (d *Doc) Fingerprint() string {
	return FingerprintPrefix + d.Job + ";" + strconv.FormatInt(d.Built.UnixNano(), 10) + ";" +
		strconv.FormatUint(d.Seq, 10) + ";" + d.DrvPath + ";" + strconv.FormatInt(d.HydraBuild, 10) + ";" +
		strings.Join(d.Outputs, ",")
}

// Sign adds sk's signature.
func (d *Doc) Sign(sk signature.SecretKey) error {
	sig, err := sk.Sign(nil, d.Fingerprint())
	if err != nil {
		return fmt.Errorf("latest: sign %s: %w", d.Job, err)
	}
	d.Sigs = append(d.Sigs, sig.String())
	slices.Sort(d.Sigs)
	d.Sigs = slices.Compact(d.Sigs)
	return nil
}

// ErrUntrusted is Verify's answer when no signature is by a trusted key.
var ErrUntrusted = errors.New("latest: no signature by a trusted key")

// Verify returns nil if a signature is valid by one of keys, else says why
// (wrapping ErrUntrusted when no signature is by a trusted key at all). The
// error's kind is Corrupt: the document is not what the key signed.
func (d *Doc) Verify(keys []signature.PublicKey) error {
	fp := d.Fingerprint()
	var why []string
	for _, s := range d.Sigs {
		sig, err := signature.ParseSignature(s)
		if err != nil {
			why = append(why, fmt.Sprintf("signature %q: %v", trunc(s), err))
			continue
		}
		for _, k := range keys {
			if k.Name != sig.Name {
				continue
			}
			if k.Verify(fp, sig) {
				return nil
			}
			return errs.Errorf(errs.Corrupt, "latest: %s: the signature by %q does not verify: the document was changed or is not this job's", d.Job, trunc(sig.Name))
		}
		why = append(why, fmt.Sprintf("signed by %q, not a trusted key", trunc(sig.Name)))
	}
	return errs.E(errs.Corrupt, fmt.Errorf("%w for %s (%s)", ErrUntrusted, d.Job, strings.Join(why, "; ")))
}

// Newer reports whether d is a later build than o (by time, then sequence).
func (d *Doc) Newer(o *Doc) bool {
	if !d.Built.Equal(o.Built) {
		return d.Built.After(o.Built)
	}
	return d.Seq > o.Seq
}

// Marshal returns the document as written to the cache.
func (d *Doc) Marshal() ([]byte, error) {
	if err := d.validate(""); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse reads a document of at most MaxSize bytes and checks its shape;
// storeDir, if set, is the store the outputs must be in. It does not check
// the signature (Verify).
func Parse(r io.Reader, storeDir string) (*Doc, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("latest: read: %w", err))
	}
	if len(b) > MaxSize {
		return nil, errs.Errorf(errs.Invalid, "latest: document larger than %d bytes", MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Doc
	if err := dec.Decode(&d); err != nil {
		return nil, errs.Errorf(errs.Invalid, "latest: not a latest-build document: %v", err)
	}
	if dec.More() {
		return nil, errs.Errorf(errs.Invalid, "latest: trailing data after the document")
	}
	if err := d.validate(storeDir); err != nil {
		return nil, err
	}
	return &d, nil
}

func (d *Doc) validate(storeDir string) error {
	if d.Type != Type {
		return errs.Errorf(errs.Invalid, "latest: type %q, want %q", trunc(d.Type), Type)
	}
	if err := ValidJob(d.Job); err != nil {
		return err
	}
	if d.Built.IsZero() {
		return errs.Errorf(errs.Invalid, "latest: %s: no build time", d.Job)
	}
	if len(d.Outputs) == 0 || len(d.Outputs) > MaxOutputs {
		return errs.Errorf(errs.Invalid, "latest: %s: %d outputs, want 1 to %d", d.Job, len(d.Outputs), MaxOutputs)
	}
	if !slices.IsSorted(d.Outputs) {
		return errs.Errorf(errs.Invalid, "latest: %s: outputs not sorted", d.Job)
	}
	for _, p := range append(slices.Clone(d.Outputs), d.DrvPath) {
		if p == "" {
			continue
		}
		dir := storeDir
		if dir == "" {
			dir = p[:max(0, strings.LastIndexByte(p, '/'))]
		}
		if err := storepath.Validate(dir, p); err != nil {
			return errs.Errorf(errs.Invalid, "latest: %s: %v", d.Job, err)
		}
	}
	if len(d.Sigs) == 0 || len(d.Sigs) > MaxSigs {
		return errs.Errorf(errs.Invalid, "latest: %s: %d signatures, want 1 to %d", d.Job, len(d.Sigs), MaxSigs)
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// keepMu orders this process's updates of documents: two builds of one
// job handled at once must end with the newer in place.
var keepMu sync.Mutex

// Keep writes raw, a document of the cache's store, as its job's latest
// in the cache c unless the one in place is newer; it reports whether raw
// is in place afterwards (written now, or already). A document in place
// that does not parse is replaced. raw is written byte for byte, so a
// mirror's copy is the publisher's.
func Keep(c cachedir.Cache, raw []byte) (bool, error) {
	d, err := Parse(bytes.NewReader(raw), c.StoreDir)
	if err != nil {
		return false, err
	}
	keepMu.Lock()
	defer keepMu.Unlock()
	old, err := c.ReadLatest(d.Job)
	if err != nil {
		return false, err
	}
	if bytes.Equal(old, raw) {
		return true, nil
	}
	if old != nil {
		if prev, perr := Parse(bytes.NewReader(old), ""); perr == nil && !d.Newer(prev) {
			return false, nil
		}
	}
	return true, c.WriteLatest(d.Job, raw)
}
