package events

import (
	"time"
)

// Type strings. Only ever add to these; never change what one means.
//
// TypeX is the version this code writes. An older version of a type is still
// read: it decodes into the same Go struct, checked against its own (frozen)
// schema, with the fields it lacks left empty. Each new version only adds
// optional fields, so a reader of the old version can ignore the new ones.
const (
	// TypeBuilt adds the Hydra job (job, hydra_build) to v1.
	TypeBuilt = "nixipfs.built.v2"
	// TypePublished adds the narinfo's IPFSSig lines (ipfs_sigs) to v2, so a
	// mirror's narinfo is the origin's byte for byte and clients fed by a
	// mirror stream a signed CID at once. v2 added what a narinfo needs
	// beyond v1 (deriver, sigs, ca).
	TypePublished = "nixipfs.published.v3"
	// TypePinned adds the addresses the mirror announces (announce_addrs).
	TypePinned     = "nixipfs.pinned.v2"
	TypeRetired    = "nixipfs.retired.v1"
	TypeDeadLetter = "nixipfs.deadletter.v1"
	// TypeCacheRoot announces the cache's root CID as a UnixFS directory.
	TypeCacheRoot = "nixipfs.cacheroot.v1"
	// TypeLatest carries a job's signed latest-build document (package
	// latest) to the mirrors, which serve it from their caches.
	TypeLatest = "nixipfs.latest.v1"

	TypeBuiltV1     = "nixipfs.built.v1"
	TypePublishedV1 = "nixipfs.published.v1"
	TypePublishedV2 = "nixipfs.published.v2"
	TypePinnedV1    = "nixipfs.pinned.v1"
)

// Types lists every event type this code writes, in the order the data flows.
var Types = []string{TypeBuilt, TypePublished, TypePinned, TypeRetired, TypeCacheRoot, TypeLatest, TypeDeadLetter}

// OldTypes lists the superseded versions that are still read. Their schemas
// in schemas/ are frozen: they are no longer generated, and never change.
var OldTypes = []string{TypeBuiltV1, TypePublishedV1, TypePublishedV2, TypePinnedV1}

// Current returns the version this code writes of typ's family:
// Current("nixipfs.built.v1") is TypeBuilt. Unknown types return "".
func Current(typ string) string {
	switch typ {
	case TypeBuilt, TypeBuiltV1:
		return TypeBuilt
	case TypePublished, TypePublishedV1, TypePublishedV2:
		return TypePublished
	case TypePinned, TypePinnedV1:
		return TypePinned
	case TypeRetired:
		return TypeRetired
	case TypeDeadLetter:
		return TypeDeadLetter
	case TypeCacheRoot:
		return TypeCacheRoot
	case TypeLatest:
		return TypeLatest
	}
	return ""
}

// Subjects. The stream captures SubjectPrefix + ">".
const (
	SubjectPrefix = "nixipfs."
	// SubjectBuilt carries Built events from the hook.
	SubjectBuilt = "nixipfs.built"
	// SubjectPublished carries Published events from the publisher.
	SubjectPublished = "nixipfs.published"
	// SubjectPinnedPrefix + mirror name carries that mirror's Pinned events.
	SubjectPinnedPrefix = "nixipfs.pinned."
	// SubjectRetired carries Retired events from prune.
	SubjectRetired = "nixipfs.retired"
	// SubjectCacheRoot carries CacheRoot events from the publisher.
	SubjectCacheRoot = "nixipfs.cacheroot"
	// SubjectLatest carries Latest events from the publisher.
	SubjectLatest = "nixipfs.latest"
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
	// Job is the job that built it, when the source knows one: Hydra's
	// "project:jobset:job". Retention keeps the last roots of each job. (v2)
	Job string `json:"job,omitempty" jsonschema:"maxLength=768"`
	// HydraBuild is Hydra's build id, when the event comes from Hydra. (v2)
	HydraBuild int64 `json:"hydra_build,omitempty" jsonschema:"minimum=0"`
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
	// Deriver is the narinfo's Deriver (a basename), if any. (v2)
	Deriver string `json:"deriver,omitempty" jsonschema:"maxLength=255"`
	// Sigs are the narinfo's Sig lines ("keyname:base64"), in order. (v2)
	Sigs []string `json:"sigs,omitempty" jsonschema:"maxItems=64"`
	// CA is the narinfo's CA field, for content-addressed paths. (v2)
	CA string `json:"ca,omitempty" jsonschema:"maxLength=1024"`
	// IPFSSigs are the narinfo's IPFSSig lines ("keyname:base64"): the
	// cache key's signatures binding CID to the NAR. (v3)
	IPFSSigs []string `json:"ipfs_sigs,omitempty" jsonschema:"maxItems=64"`
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
	// AnnounceAddrs are the multiaddrs the mirror tells clients to dial it
	// on (its public addresses, from --announce-addr). (v2)
	AnnounceAddrs []string `json:"announce_addrs,omitempty" jsonschema:"maxItems=64"`
}

// Retired says that prune removed a store path from the binary cache, so
// hosts that hold its NAR may let it go; sent by nix-ipfs prune.
type Retired struct {
	Header
	Host     string `json:"host" jsonschema:"minLength=1,maxLength=255"`
	StoreDir string `json:"store_dir" jsonschema:"pattern=^/.+"`
	// StorePath is the absolute store path that left the cache.
	StorePath string `json:"store_path" jsonschema:"minLength=1,maxLength=4096"`
	// NarHash is the retired NAR's "sha256:<nix32>".
	NarHash string `json:"nar_hash" jsonschema:"pattern=^sha256:[0-9a-df-np-sv-z]{52}$"`
	NarSize int64  `json:"nar_size" jsonschema:"minimum=0"`
	// CID is the narinfo's IPFSHash; empty when the narinfo had none.
	CID string `json:"cid,omitempty" jsonschema:"maxLength=256"`
	// Reason is why, for a person: which policy let it go.
	Reason string `json:"reason" jsonschema:"minLength=1,maxLength=1024"`
}

// MaxLatestDocument bounds Latest.Document (package latest's MaxSize; that
// package cannot be imported here, it would make a cycle through config).
const MaxLatestDocument = 64 << 10

// Latest carries a job's latest-build document, as the publisher wrote it
// to nix-ipfs-latest/<job>.json in its cache, to the mirrors: each writes
// the same bytes into its own cache, so a fleet can pull from any of them.
// The document is signed with the cache key (package latest checks it); a
// mirror needs no key to carry it, and a client trusts the signature, not
// the mirror.
type Latest struct {
	Header
	Host     string `json:"host" jsonschema:"minLength=1,maxLength=255"`
	StoreDir string `json:"store_dir" jsonschema:"pattern=^/.+"`
	// Job names the document (its file name in nix-ipfs-latest/).
	Job string `json:"job" jsonschema:"pattern=^[A-Za-z0-9_+][A-Za-z0-9._+:-]{0\\,254}$"`
	// Document is the signed document, byte for byte as in the cache
	// (schemas/latestbuild.v1.json).
	Document string `json:"document" jsonschema:"minLength=2,maxLength=65536"`
}

// CacheRoot says that the binary cache, kept as a UnixFS directory in the
// publisher's kubo (MFS), now has this root CID: nix-cache-info,
// <hashpart>.narinfo for every path, and nar/<filehash>.nar linking each
// NAR's CID. Any IPFS gateway serves it to stock Nix as
// http://GATEWAY/ipfs/<root>. Sent by the publisher, at most once per its
// announce interval; mirrors pin the latest root.
type CacheRoot struct {
	Header
	Host     string `json:"host" jsonschema:"minLength=1,maxLength=255"`
	StoreDir string `json:"store_dir" jsonschema:"pattern=^/.+"`
	// Root is the directory's CID.
	Root string `json:"root" jsonschema:"minLength=1,maxLength=256"`
	// Publisher is the kubo node that holds the directory, for mirrors to
	// dial.
	Publisher Node `json:"publisher"`
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
	_ Event = (*Retired)(nil)
	_ Event = (*DeadLetter)(nil)
	_ Event = (*CacheRoot)(nil)
	_ Event = (*Latest)(nil)
)

// Head returns the event's header.
func Head(e Event) *Header { return e.header() }

// New returns an empty event of the given type, any version still read, or
// nil for an unknown type.
func New(typ string) Event {
	switch Current(typ) {
	case TypeBuilt:
		return &Built{}
	case TypePublished:
		return &Published{}
	case TypePinned:
		return &Pinned{}
	case TypeRetired:
		return &Retired{}
	case TypeDeadLetter:
		return &DeadLetter{}
	case TypeCacheRoot:
		return &CacheRoot{}
	case TypeLatest:
		return &Latest{}
	}
	return nil
}
