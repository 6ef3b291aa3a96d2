// Package packed gives the strings of a narinfo that retention's index
// holds for every path (store path, NarHash, CID, NAR URL) a shorter form
// and back: binary where the text is the canonical encoding of bytes,
// the text itself otherwise, each form tagged by its first byte. At a
// million paths the difference is about 90 MB (issue 24).
package packed

import (
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

const (
	tagText   = 't' // the text, as it was
	tagStore  = 'n' // a store path under /nix/store, without it
	tagHash   = 'h' // a store path under /nix/store, without it and its hash part
	tagBinary = 'b' // a CID's bytes, or a NAR URL's hash
)

const nixStore = "/nix/store/"

// StorePath packs a store path whose hash part is known to be h (its
// narinfo's name, the id's key in the index): /nix/store/ and h are left
// out.
func StorePath(s, h string) string {
	if rest, ok := strings.CutPrefix(s, nixStore); ok {
		if tail, ok := strings.CutPrefix(rest, h); ok && h != "" {
			return string(tagHash) + tail
		}
		return string(tagStore) + rest
	}
	return string(tagText) + s
}

// StorePathText is the store path p packs, given h.
func StorePathText(p, h string) string {
	if p == "" {
		return ""
	}
	switch p[0] {
	case tagHash:
		return nixStore + h + p[1:]
	case tagStore:
		return nixStore + p[1:]
	}
	return p[1:]
}

// StorePathIs reports whether p packs s, given h, without unpacking it.
func StorePathIs(p, h, s string) bool {
	if p == "" {
		return s == ""
	}
	switch p[0] {
	case tagHash:
		return len(s) == len(nixStore)+len(h)+len(p)-1 && strings.HasPrefix(s, nixStore) &&
			s[len(nixStore):len(nixStore)+len(h)] == h && s[len(nixStore)+len(h):] == p[1:]
	case tagStore:
		return len(s) == len(nixStore)+len(p)-1 && strings.HasPrefix(s, nixStore) && s[len(nixStore):] == p[1:]
	}
	return p[1:] == s
}

// UnderHash reports whether p packs a store path as /nix/store/, its
// hash part, then the rest: such paths order as their hash parts.
func UnderHash(p string) bool { return p != "" && p[0] == tagHash }

// NarHash packs "sha256:<52 nix32>" as its 32 bytes, anything else as
// text.
func NarHash(s string) string {
	if h, ok := strings.CutPrefix(s, "sha256:"); ok && len(h) == 52 {
		if b, err := nixbase32.DecodeString(h); err == nil && len(b) == 32 && nixbase32.EncodeToString(b) == h {
			return string(tagBinary) + string(b)
		}
	}
	return text(s)
}

// NarHashText is the NarHash p packs.
func NarHashText(p string) string {
	if p != "" && p[0] == tagBinary {
		return "sha256:" + nixbase32.EncodeToString([]byte(p[1:]))
	}
	return untext(p)
}

// CID packs a CID as its bytes when its text is their default encoding
// (base58 for v0, base32 for v1), anything else as text.
func CID(s string) string {
	if c, err := cid.Decode(s); err == nil && c.String() == s {
		return string(tagBinary) + c.KeyString()
	}
	return text(s)
}

// CIDText is the CID p packs.
func CIDText(p string) string {
	if p != "" && p[0] == tagBinary {
		c, err := cid.Cast([]byte(p[1:]))
		if err == nil {
			return c.String()
		}
	}
	return untext(p)
}

// NarURL packs "nar/<52 nix32>..." as the hash's 32 bytes and the rest,
// anything else as text.
func NarURL(s string) string {
	const pre = "nar/"
	if strings.HasPrefix(s, pre) && len(s) >= len(pre)+52 {
		h := s[len(pre) : len(pre)+52]
		if b, err := nixbase32.DecodeString(h); err == nil && len(b) == 32 && nixbase32.EncodeToString(b) == h {
			return string(tagBinary) + string(b) + s[len(pre)+52:]
		}
	}
	return text(s)
}

// NarURLText is the NAR URL p packs.
func NarURLText(p string) string {
	if p != "" && p[0] == tagBinary && len(p) >= 33 {
		return "nar/" + nixbase32.EncodeToString([]byte(p[1:33])) + p[33:]
	}
	return untext(p)
}

// text packs s as itself; the empty string stays empty.
func text(s string) string {
	if s == "" {
		return ""
	}
	return string(tagText) + s
}

func untext(p string) string {
	if p == "" {
		return ""
	}
	return p[1:]
}
