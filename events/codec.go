package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
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
// left out, so the same fact published twice gets the same id.
func ComputeID(e Event) string {
	h := sha256.New()
	w := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	switch e := e.(type) {
	case *Built:
		w(TypeBuilt)
		w(e.StoreDir)
		w(e.DrvPath)
		for _, p := range e.OutPaths {
			w(p)
		}
	case *Published:
		w(TypePublished)
		w(e.StorePath)
		w(e.NarHash)
		w(e.CID)
	case *Pinned:
		w(TypePinned)
		w(e.Mirror)
		w(e.CID)
	case *DeadLetter:
		w(TypeDeadLetter)
		w(e.Subject)
		w(strconv.FormatUint(e.StreamSeq, 10))
		w(e.Consumer)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Seal fills in e's header: its type, its id, and the time if unset. Call it
// after the content fields are final.
func Seal(e Event) {
	hd := e.header()
	switch e.(type) {
	case *Built:
		hd.Type = TypeBuilt
	case *Published:
		hd.Type = TypePublished
	case *Pinned:
		hd.Type = TypePinned
	case *DeadLetter:
		hd.Type = TypeDeadLetter
	}
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
func Encode(e Event) ([]byte, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("encode %T: %w", e, err))
	}
	if _, err := Decode(data); err != nil {
		return nil, err
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
		return nil, errs.Errorf(errs.Invalid, "unknown event type %q (known: %s)", peek.Type, strings.Join(Types, ", "))
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
