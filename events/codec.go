package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multiaddr"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/schemas"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// MaxSize is the largest event accepted, encoded. The stream refuses larger
// messages too (StreamOptions.MaxMsgSize).
const MaxSize = 1 << 20

// ComputeID returns the deterministic id of e: a SHA-256 over its type and
// the fields that make it the same fact. Time, host and node addresses are
// left out, so the same fact published twice gets the same id. An event of
// an older version keeps the id that version gave it.
func ComputeID(e Event) string {
	typ := e.header().Type
	if !sameFamily(e, typ) {
		typ = currentType(e)
	}
	h := sha256.New()
	w := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	w(typ)
	switch e := e.(type) {
	case *Built:
		w(e.StoreDir)
		w(e.DrvPath)
		for _, p := range e.OutPaths {
			w(p)
		}
		if typ != TypeBuiltV1 {
			// The same outputs reported by the hook and by Hydra are two
			// facts: the second one names the job.
			w(e.Job)
			w(strconv.FormatInt(e.HydraBuild, 10))
		}
	case *Published:
		w(e.StorePath)
		w(e.NarHash)
		w(e.CID)
	case *Pinned:
		w(e.Mirror)
		w(e.CID)
	case *Retired:
		w(e.StorePath)
		w(e.NarHash)
		w(e.CID)
	case *DeadLetter:
		w(e.Subject)
		w(strconv.FormatUint(e.StreamSeq, 10))
		w(e.Consumer)
	case *CacheRoot:
		w(e.StoreDir)
		w(e.Root)
	case *Latest:
		w(e.StoreDir)
		w(e.Job)
		w(e.Document)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// currentType is the type string this code writes for e's Go type.
func currentType(e Event) string {
	switch e.(type) {
	case *Built:
		return TypeBuilt
	case *Published:
		return TypePublished
	case *Pinned:
		return TypePinned
	case *Retired:
		return TypeRetired
	case *DeadLetter:
		return TypeDeadLetter
	case *CacheRoot:
		return TypeCacheRoot
	case *Latest:
		return TypeLatest
	}
	return ""
}

// sameFamily reports whether typ is a version of e's Go type.
func sameFamily(e Event, typ string) bool { return Current(typ) == currentType(e) }

// Seal fills in e's header: its type (the version this code writes), its id,
// and the time if unset. Call it after the content fields are final.
func Seal(e Event) {
	hd := e.header()
	hd.Type = currentType(e)
	if b, ok := e.(*Built); ok {
		slices.Sort(b.OutPaths)
		b.OutPaths = slices.Compact(b.OutPaths)
	}
	hd.ID = ComputeID(e)
	if hd.Time.IsZero() {
		hd.Time = time.Now().UTC()
	}
}

// Encode validates e and returns its JSON. An event that would not pass
// Decode is never encoded.
//
// It checks what Decode checks, without decoding its own output again:
// the size, the JSON Schema of e's type, then Validate on e itself (the
// fields Decode would fill are e's). Prune encodes a "retired" event per
// path, a million in a year's first prune: the second decode was a
// quarter of that work (docs/BENCHMARKS.md, "Scale").
func Encode(e Event) ([]byte, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("encode %T: %w", e, err))
	}
	typ := e.header().Type
	if len(data) > MaxSize {
		return nil, errs.Errorf(errs.Invalid, "event of %d bytes exceeds the %d-byte limit", len(data), MaxSize)
	}
	if n := New(typ); n == nil || reflect.TypeOf(n) != reflect.TypeOf(e) {
		return nil, errs.Errorf(errs.Invalid, "encode %T: its type is %q (Seal sets it)", e, typ)
	}
	if err := schemas.Validate(typ, data); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	if err := Validate(e); err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("%s %s: %w", typ, e.header().ID, err))
	}
	return data, nil
}

// Decode parses and validates an event: size, JSON Schema of its type,
// then the rules a schema cannot say (store paths, CIDs, the id). Every error
// is of kind errs.Invalid: an event that fails here never becomes valid.
func Decode(data []byte) (Event, error) {
	if len(data) > MaxSize {
		return nil, errs.Errorf(errs.Invalid, "event of %d bytes exceeds the %d-byte limit", len(data), MaxSize)
	}
	var peek struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &peek); err != nil {
		return nil, errs.Errorf(errs.Invalid, "event is not a JSON object: %v", err)
	}
	e := New(peek.Type)
	if e == nil {
		return nil, errs.Errorf(errs.Invalid, "unknown event type %q (known: %s)", peek.Type, strings.Join(append(slices.Clone(Types), OldTypes...), ", "))
	}
	if err := schemas.Validate(peek.Type, data); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(e); err != nil {
		return nil, errs.Errorf(errs.Invalid, "%s: %v", peek.Type, err)
	}
	if err := Validate(e); err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("%s %s: %w", peek.Type, e.header().ID, err))
	}
	return e, nil
}

// Validate checks what the schema cannot: store paths under the store
// directory, CIDs and multiaddrs that parse, and an id that matches content.
func Validate(e Event) error {
	hd := e.header()
	switch e := e.(type) {
	case *Built:
		if err := storepath.ValidateStoreDir(e.StoreDir); err != nil {
			return err
		}
		if e.DrvPath != "" {
			if err := storepath.Validate(e.StoreDir, e.DrvPath); err != nil {
				return fmt.Errorf("drv_path: %w", err)
			}
			if !strings.HasSuffix(e.DrvPath, ".drv") {
				return fmt.Errorf("drv_path %q: does not end in .drv", e.DrvPath)
			}
		}
		if strings.ContainsFunc(e.Job, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("job %q: contains a control character", e.Job)
		}
		for i, p := range e.OutPaths {
			if err := storepath.Validate(e.StoreDir, p); err != nil {
				return fmt.Errorf("out_paths[%d]: %w", i, err)
			}
			if i > 0 && e.OutPaths[i-1] >= p {
				return errors.New("out_paths: not sorted and unique")
			}
		}
	case *Published:
		if err := storepath.ValidateStoreDir(e.StoreDir); err != nil {
			return err
		}
		if err := storepath.Validate(e.StoreDir, e.StorePath); err != nil {
			return fmt.Errorf("store_path: %w", err)
		}
		for i, r := range e.References {
			if err := storepath.ValidateBase(r); err != nil {
				return fmt.Errorf("references[%d] %q: %w", i, r, err)
			}
		}
		if err := validateCID(e.CID); err != nil {
			return err
		}
		if err := validateNode(e.Publisher); err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
		if e.Deriver != "" {
			if err := storepath.ValidateBase(e.Deriver); err != nil {
				return fmt.Errorf("deriver %q: %w", e.Deriver, err)
			}
		}
		for i, sig := range e.Sigs {
			if name, _, ok := strings.Cut(sig, ":"); !ok || name == "" || strings.ContainsAny(sig, "\n\r ") {
				return fmt.Errorf("sigs[%d] %q: not keyname:base64", i, sig)
			}
		}
		for i, sig := range e.IPFSSigs {
			if name, _, ok := strings.Cut(sig, ":"); !ok || name == "" || strings.ContainsAny(sig, "\n\r ") {
				return fmt.Errorf("ipfs_sigs[%d] %q: not keyname:base64", i, sig)
			}
		}
		if strings.ContainsAny(e.CA, "\n\r") {
			return fmt.Errorf("ca %q: contains a line break", e.CA)
		}
	case *Pinned:
		if !path.IsAbs(e.StorePath) {
			return fmt.Errorf("store_path %q: not absolute", e.StorePath)
		}
		if err := storepath.ValidateBase(path.Base(e.StorePath)); err != nil {
			return fmt.Errorf("store_path %q: %w", e.StorePath, err)
		}
		if err := validateCID(e.CID); err != nil {
			return err
		}
		if err := validateNode(e.Node); err != nil {
			return fmt.Errorf("node: %w", err)
		}
		if err := validateNode(Node{Addrs: e.AnnounceAddrs}); err != nil {
			return fmt.Errorf("announce_addrs: %w", err)
		}
	case *Retired:
		if err := storepath.ValidateStoreDir(e.StoreDir); err != nil {
			return err
		}
		if err := storepath.Validate(e.StoreDir, e.StorePath); err != nil {
			return fmt.Errorf("store_path: %w", err)
		}
		if e.CID != "" {
			if err := validateCID(e.CID); err != nil {
				return err
			}
		}
	case *CacheRoot:
		if err := storepath.ValidateStoreDir(e.StoreDir); err != nil {
			return err
		}
		if err := validateCID(e.Root); err != nil {
			return fmt.Errorf("root: %w", err)
		}
		if err := validateNode(e.Publisher); err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
	case *Latest:
		if err := storepath.ValidateStoreDir(e.StoreDir); err != nil {
			return err
		}
		if !latestJob.MatchString(e.Job) {
			return fmt.Errorf("job %q: want letters, digits and ._+:-", e.Job)
		}
		if len(e.Document) > MaxLatestDocument || !json.Valid([]byte(e.Document)) || !strings.HasPrefix(e.Document, "{") {
			return fmt.Errorf("document: not a JSON object of at most %d bytes", MaxLatestDocument)
		}
	case *DeadLetter:
		if !strings.HasPrefix(e.Subject, SubjectPrefix) {
			return fmt.Errorf("subject %q: not under %s", e.Subject, SubjectPrefix)
		}
	}
	if want := ComputeID(e); hd.ID != want {
		return fmt.Errorf("id %s does not match the event's content (want %s)", hd.ID, want)
	}
	return nil
}

// latestJob is package latest's job name rule.
var latestJob = regexp.MustCompile(`^[A-Za-z0-9_+][A-Za-z0-9._+:-]{0,254}$`)

func validateCID(s string) error {
	c, err := cid.Decode(s)
	if err != nil {
		return fmt.Errorf("cid %q: %v", s, err)
	}
	if c.String() != s {
		return fmt.Errorf("cid %q: not in canonical form (%s)", s, c)
	}
	return nil
}

func validateNode(n Node) error {
	for _, a := range n.Addrs {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			return fmt.Errorf("addr %q: %v", a, err)
		}
	}
	return nil
}
