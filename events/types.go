package events

import (
	"time"
)

// Type strings. Only ever add to these; never change what one means.
const (
	TypeBuilt      = "nixipfs.built.v1"
	TypePublished  = "nixipfs.published.v1"
	TypePinned     = "nixipfs.pinned.v1"
	TypeDeadLetter = "nixipfs.deadletter.v1"
)

// Types lists every event type, in the order the data flows.
var Types = []string{TypeBuilt, TypePublished, TypePinned, TypeDeadLetter}

// Subjects. The stream captures SubjectPrefix + ">".
const (
	SubjectPrefix = "nixipfs."
	// SubjectBuilt carries Built events from the hook.
	SubjectBuilt = "nixipfs.built"
	// SubjectPublished carries Published events from the publisher.
	SubjectPublished = "nixipfs.published"
	// SubjectPinnedPrefix + mirror name carries that mirror's Pinned events.
	SubjectPinnedPrefix = "nixipfs.pinned."
	// SubjectDeadPrefix + the original subject's last token carries DeadLetter
	// events, e.g. nixipfs.dead.built.
	SubjectDeadPrefix = "nixipfs.dead."
)

// SubjectPinned is the subject of mirror's Pinned events.
func SubjectPinned(mirror string) string { return SubjectPinnedPrefix + mirror }

// SubjectDead is the dead-letter subject for events that came on subject.
func SubjectDead(subject string) string {
	last := subject
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			last = subject[i+1:]
			break
		}
	}
	return SubjectDeadPrefix + last
}

// Header starts every event.
type Header struct {
	// Type is the versioned event type, e.g. "nixipfs.built.v1".
	Type string `json:"type" jsonschema:"minLength=1"`
	// ID is derived from the event's content and used as Nats-Msg-Id.
	ID string `json:"id" jsonschema:"pattern=^[0-9a-f]{64}$"`
	// Time is when the fact happened, RFC 3339.
	Time time.Time `json:"time"`
}

// Built says that a Nix build finished on a builder; sent by nix-ipfs-hook.
type Built struct {
	Header
	// Host is the builder's hostname.
	Host string `json:"host" jsonschema:"minLength=1,maxLength=255"`
	// StoreDir is the builder's Nix store directory, normally /nix/store.
	StoreDir string `json:"store_dir" jsonschema:"pattern=^/.+"`
	// DrvPath is the derivation that was built; empty when Nix did not say.
	DrvPath string `json:"drv_path,omitempty" jsonschema:"maxLength=4096"`
	// OutPaths are the store paths the build produced, sorted.
	OutPaths []string `json:"out_paths" jsonschema:"minItems=1,maxItems=1024"`
}

// ImportParams are the kubo import parameters that, together with the bytes,
// determine a CID. They are recorded so anyone can reproduce it.
type ImportParams struct {
	CIDVersion   int    `json:"cid_version" jsonschema:"enum=0,enum=1"`
	Chunker      string `json:"chunker" jsonschema:"minLength=1,maxLength=64"`
	RawLeaves    bool   `json:"raw_leaves"`
	HashFunction string `json:"hash_function" jsonschema:"minLength=1,maxLength=32"`
	// MaxFileLinks is the width of the file DAG (kubo's default is 174;
	// newer import profiles change it, and with it the CID).
	MaxFileLinks int `json:"max_file_links" jsonschema:"minimum=1"`
	// Nocopy is true when the publisher used kubo's filestore: the blocks
	// then point into the publisher's cache directory.
	Nocopy bool `json:"nocopy"`
}

// Node names an IPFS node and where to dial it.
type Node struct {
	PeerID string   `json:"peer_id" jsonschema:"minLength=1,maxLength=128"`
	Addrs  []string `json:"addrs" jsonschema:"maxItems=64"`
}

// Published says that one store path is in the binary cache and in IPFS;
// sent by the publisher once the NAR and narinfo are durable.
type Published struct {
	Header
	Host     string `json:"host" jsonschema:"minLength=1,maxLength=255"`
	StoreDir string `json:"store_dir" jsonschema:"pattern=^/.+"`
	// StorePath is the absolute store path.
	StorePath string `json:"store_path" jsonschema:"minLength=1,maxLength=4096"`
	// NarHash is "sha256:<nix32>", as in the narinfo, and signed there.
	NarHash string `json:"nar_hash" jsonschema:"pattern=^sha256:[0-9a-df-np-sv-z]{52}$"`
	NarSize int64  `json:"nar_size" jsonschema:"minimum=0"`
	// References are the basenames of the path's references, sorted.
	References []string `json:"references" jsonschema:"maxItems=100000"`
	// CacheURL is the binary cache's base URL as the publisher knows it.
	CacheURL string `json:"cache_url" jsonschema:"minLength=1,maxLength=4096"`
	// NarURL is the NAR's URL relative to CacheURL, "nar/<filehash>.nar".
	NarURL string `json:"nar_url" jsonschema:"pattern=^nar/[0-9a-df-np-sv-z]{52}\\.nar$"`
	// CID is the NAR's IPFS content id, also the narinfo's IPFSHash.
	CID    string       `json:"cid" jsonschema:"minLength=1,maxLength=256"`
	Import ImportParams `json:"import"`
	// Publisher is the kubo node that holds the NAR, for mirrors to dial.
	Publisher Node `json:"publisher"`
}

// Pinned says that a mirror holds a CID pinned; sent by the mirror.
type Pinned struct {
	Header
	Mirror    string `json:"mirror" jsonschema:"pattern=^[A-Za-z0-9_-]+$,maxLength=64"`
	CID       string `json:"cid" jsonschema:"minLength=1,maxLength=256"`
	StorePath string `json:"store_path" jsonschema:"minLength=1,maxLength=4096"`
	// Bytes is the NAR size that the pin holds.
	Bytes int64 `json:"bytes" jsonschema:"minimum=0"`
	// DurationMS is how long the pin took, from start to complete.
	DurationMS int64 `json:"duration_ms" jsonschema:"minimum=0"`
	// Verified is true when the mirror read the bytes back and checked NarHash.
	Verified bool `json:"verified"`
	// Node is the mirror's kubo node.
	Node Node `json:"node"`
}

// DeadLetter carries an event that a worker gave up on, and why.
type DeadLetter struct {
	Header
	// Subject and StreamSeq locate the original message.
	Subject   string `json:"subject" jsonschema:"minLength=1,maxLength=256"`
	StreamSeq uint64 `json:"stream_seq"`
	// Consumer is the durable consumer that gave up.
	Consumer   string `json:"consumer" jsonschema:"minLength=1,maxLength=256"`
	Deliveries uint64 `json:"deliveries"`
	// Kind is why: "invalid" (never retried), "corrupt" (the store's bytes
	// do not match its record) or "exhausted" (retries ran out).
	Kind string `json:"kind" jsonschema:"enum=invalid,enum=corrupt,enum=exhausted"`
	// Reason is for a person to read.
	Reason string `json:"reason" jsonschema:"minLength=1,maxLength=8192"`
	// Payload is the original message body (base64 in JSON), cut to
	// MaxDeadPayload bytes; PayloadTruncated says when it was.
	Payload          []byte `json:"payload"`
	PayloadTruncated bool   `json:"payload_truncated,omitempty"`
}

// Event is any of the event types.
type Event interface {
	header() *Header
}

func (h *Header) header() *Header { return h }

var (
	_ Event = (*Built)(nil)
	_ Event = (*Published)(nil)
	_ Event = (*Pinned)(nil)
	_ Event = (*DeadLetter)(nil)
)

// Head returns the event's header.
func Head(e Event) *Header { return e.header() }

// New returns an empty event of the given type, or nil for an unknown type.
func New(typ string) Event {
	switch typ {
	case TypeBuilt:
		return &Built{}
	case TypePublished:
		return &Published{}
	case TypePinned:
		return &Pinned{}
	case TypeDeadLetter:
		return &DeadLetter{}
	}
	return nil
}
