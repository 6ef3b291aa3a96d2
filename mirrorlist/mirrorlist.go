// Package mirrorlist is the mirror list: a small JSON document in the root
// of a binary cache, next to nix-cache-info, that names the mirrors holding
// the cache's NARs on IPFS (each mirror's peer ID and the addresses to dial
// it on). The publisher keeps it from the mirrors' "pinned" events; a
// substituter reads it from its upstream and peers its kubo with those
// mirrors, so a client finds the NARs without the DHT.
//
// The document is outside input for its readers: Parse bounds its size,
// and Policy.Peers decides which entries and addresses a client dials,
// trimming the rest with a reason for each.
package mirrorlist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/nix-ipfs/nix-ipfs/events"
)

// FileName is the document's name in the cache root.
const FileName = "nix-ipfs-mirrors.json"

// Type is the version this code writes. Readers accept any
// "nixipfs.mirrors.v<N>": a later version only adds optional fields, which
// a reader of an earlier one ignores.
const Type = "nixipfs.mirrors.v1"

const typePrefix = "nixipfs.mirrors.v"

// Bounds. The writer keeps within them; a reader refuses a document larger
// than MaxSize and trims the rest (Policy).
const (
	// MaxSize is the largest document a reader accepts.
	MaxSize = 1 << 20
	// MaxMirrors is the most entries the publisher writes: the mirrors
	// that confirmed a pin most recently.
	MaxMirrors = 256
	// MaxAddrs is the most addresses per entry (as in "pinned" events).
	MaxAddrs = 64
)

// List is the document.
type List struct {
	// Type is the versioned document type, "nixipfs.mirrors.v1".
	Type string `json:"type" jsonschema:"pattern=^nixipfs\\.mirrors\\.v[0-9]+$"`
	// Updated is when the publisher last changed the list, RFC 3339.
	Updated time.Time `json:"updated"`
	// Mirrors are the mirrors that confirmed pins, the most recent first.
	Mirrors []Mirror `json:"mirrors" jsonschema:"maxItems=256"`
}

// Mirror is one mirror that confirmed pins.
type Mirror struct {
	// Name is the mirror's name (--name), as in its "pinned" events.
	Name string `json:"name" jsonschema:"pattern=^[A-Za-z0-9_-]+$,maxLength=64"`
	// PeerID is the mirror's kubo node.
	PeerID string `json:"peer_id" jsonschema:"minLength=1,maxLength=128"`
	// Addrs are multiaddrs without /p2p/<peer_id>: the addresses the
	// mirror announces (--announce-addr), or, when it announces none, the
	// addresses its node reports.
	Addrs []string `json:"addrs" jsonschema:"maxItems=64"`
	// Announced is true when Addrs are the mirror's announced addresses.
	Announced bool `json:"announced"`
	// LastPinned is the time of the mirror's latest "pinned" event.
	LastPinned time.Time `json:"last_pinned"`
}

// FromPinned returns the entry a mirror's "pinned" event makes.
func FromPinned(p *events.Pinned) Mirror {
	m := Mirror{Name: p.Mirror, PeerID: p.Node.PeerID, LastPinned: p.Time.UTC()}
	if len(p.AnnounceAddrs) > 0 {
		m.Addrs, m.Announced = p.AnnounceAddrs, true
	} else {
		m.Addrs = p.Node.Addrs
	}
	m.Addrs = slices.Clone(m.Addrs)
	if len(m.Addrs) > MaxAddrs {
		m.Addrs = m.Addrs[:MaxAddrs]
	}
	if m.Addrs == nil {
		m.Addrs = []string{}
	}
	return m
}

// Set builds a List from "pinned" events: one entry per mirror name, from
// its latest event. It is not safe for concurrent use.
type Set struct {
	byName map[string]Mirror
}

// NewSet returns an empty Set.
func NewSet() *Set { return &Set{byName: map[string]Mirror{}} }

// Add records p and reports whether the list changed. An event older than
// the one already recorded for its mirror changes nothing, so events may
// arrive in any order.
func (s *Set) Add(p *events.Pinned) bool {
	m := FromPinned(p)
	if m.PeerID == "" {
		return false
	}
	old, ok := s.byName[m.Name]
	if ok && old.LastPinned.After(m.LastPinned) {
		return false
	}
	s.byName[m.Name] = m
	return !ok || !sameMirror(old, m)
}

// sameMirror ignores LastPinned: a list rewritten for every pin would
// churn the file for nothing a client uses.
func sameMirror(a, b Mirror) bool {
	return a.Name == b.Name && a.PeerID == b.PeerID && a.Announced == b.Announced && slices.Equal(a.Addrs, b.Addrs)
}

// Len is the number of mirrors recorded.
func (s *Set) Len() int { return len(s.byName) }

// List returns the document: at most MaxMirrors entries, the most recent
// first (then by name, so equal inputs give equal bytes).
func (s *Set) List(now time.Time) *List {
	l := &List{Type: Type, Updated: now.UTC(), Mirrors: make([]Mirror, 0, len(s.byName))}
	for _, m := range s.byName {
		l.Mirrors = append(l.Mirrors, m)
	}
	slices.SortFunc(l.Mirrors, func(a, b Mirror) int {
		if c := b.LastPinned.Compare(a.LastPinned); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(l.Mirrors) > MaxMirrors {
		l.Mirrors = l.Mirrors[:MaxMirrors]
	}
	return l
}

// Marshal returns the document's bytes, indented, with a final newline.
func (l *List) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ErrTooLarge is returned for a document over MaxSize.
var ErrTooLarge = errors.New("mirror list larger than 1 MiB")

// Read parses a document from r, reading at most MaxSize+1 bytes.
func Read(r io.Reader) (*List, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("mirror list: %w", err)
	}
	return Parse(data)
}

// Parse parses a document. It fails only when the whole is unusable: too
// large, not JSON of the right shape, or not a mirror list. Whether each
// entry is usable is Policy's business. Fields it does not know are
// ignored (a later version's additions).
func Parse(data []byte) (*List, error) {
	if len(data) > MaxSize {
		return nil, ErrTooLarge
	}
	var l List
	d := json.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(&l); err != nil {
		return nil, fmt.Errorf("mirror list: not JSON of the right shape: %w", err)
	}
	if d.More() {
		return nil, errors.New("mirror list: data after the JSON document")
	}
	v, ok := strings.CutPrefix(l.Type, typePrefix)
	if !ok || v == "" || strings.Trim(v, "0123456789") != "" || len(v) > 6 {
		return nil, fmt.Errorf("mirror list: type %.80q is not %s<N>", l.Type, typePrefix)
	}
	return &l, nil
}

// checkPeerID reports whether id is a peer ID a multiaddr can carry.
func checkPeerID(id string) error {
	if id == "" || len(id) > 128 {
		return errors.New("peer ID empty or too long")
	}
	if _, err := ma.NewComponent("p2p", id); err != nil {
		return fmt.Errorf("peer ID %.80q: %v", id, err)
	}
	return nil
}
