package events_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

const (
	p1  = "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12"
	p2  = "/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-hello-2.12-dev"
	cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
)

func samples() []events.Event {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	b := &events.Built{Header: events.Header{Time: t0}, Host: "a", StoreDir: "/nix/store",
		DrvPath: "/nix/store/y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello-2.12.drv", OutPaths: []string{p2, p1}}
	p := &events.Published{Header: events.Header{Time: t0}, Host: "a", StoreDir: "/nix/store", StorePath: p1,
		NarHash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", NarSize: 120,
		References: []string{"1b9p07z77phvv2hf6gm9f28syp39f1ag-hello-2.12-dev"}, CacheURL: "file:///var/cache/nix",
		NarURL: "nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar", CID: cid,
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "12D3KooWabc", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}}
	pin := &events.Pinned{Header: events.Header{Time: t0}, Mirror: "b", CID: cid, StorePath: p1, Bytes: 120,
		DurationMS: 5, Node: events.Node{PeerID: "12D3KooWdef", Addrs: []string{}}}
	dl := &events.DeadLetter{Header: events.Header{Time: t0}, Subject: "nixipfs.built", StreamSeq: 7,
		Consumer: "publisher", Deliveries: 1, Kind: "invalid", Reason: "bad", Payload: []byte("{}")}
	out := []events.Event{b, p, pin, dl}
	for _, e := range out {
		events.Seal(e)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, e := range samples() {
		data, err := events.Encode(e)
		if err != nil {
			t.Fatalf("%T: %v", e, err)
		}
		got, err := events.Decode(data)
		if err != nil {
			t.Fatalf("%T: %v", e, err)
		}
		again, _ := json.Marshal(got)
		if !bytes.Equal(again, data) {
			t.Errorf("%T: round trip changed\n%s\n%s", e, data, again)
		}
	}
}

func TestIDIsDeterministic(t *testing.T) {
	a, b := samples()[0].(*events.Built), samples()[0].(*events.Built)
	b.Time = b.Time.Add(time.Hour)
	b.Host = "other"
	events.Seal(b)
	if a.ID != b.ID {
		t.Error("the same build at another time or host has another id")
	}
	b.OutPaths = []string{p1}
	events.Seal(b)
	if a.ID == b.ID {
		t.Error("different outputs have the same id")
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := events.Encode(samples()[0])
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := map[string][]byte{
		"not json":      []byte("{"),
		"unknown type":  mutate(func(m map[string]any) { m["type"] = "nixipfs.built.v9" }),
		"missing field": mutate(func(m map[string]any) { delete(m, "out_paths") }),
		"extra field":   mutate(func(m map[string]any) { m["evil"] = 1 }),
		"outside store": mutate(func(m map[string]any) { m["out_paths"] = []string{"/etc/passwd"} }),
		"dotdot": mutate(func(m map[string]any) {
			m["out_paths"] = []string{"/nix/store/../../etc/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x"}
		}),
		"wrong id":           mutate(func(m map[string]any) { m["id"] = strings.Repeat("0", 64) }),
		"empty outputs":      mutate(func(m map[string]any) { m["out_paths"] = []string{} }),
		"oversize":           append(good[:len(good)-1], []byte(`,"x":"`+strings.Repeat("a", events.MaxSize)+`"}`)...),
		"relative store dir": mutate(func(m map[string]any) { m["store_dir"] = "nix/store" }),
	}
	for name, data := range cases {
		_, err := events.Decode(data)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: error %v is not of kind Invalid", name, err)
		}
	}
	pub, _ := events.Encode(samples()[1])
	var m map[string]any
	json.Unmarshal(pub, &m)
	m["cid"] = "not-a-cid"
	bad, _ := json.Marshal(m)
	if _, err := events.Decode(bad); err == nil || !strings.Contains(err.Error(), "cid") {
		t.Errorf("invalid CID: %v", err)
	}
}

func TestSubjectDead(t *testing.T) {
	if got := events.SubjectDead(events.SubjectBuilt); got != "nixipfs.dead.built" {
		t.Error(got)
	}
	if got := events.SubjectDead(events.SubjectPinned("b")); got != "nixipfs.dead.b" {
		t.Error(got)
	}
}

func FuzzDecode(f *testing.F) {
	for _, e := range samples() {
		data, _ := events.Encode(e)
		f.Add(data)
	}
	f.Add([]byte(`{"type":"nixipfs.built.v1"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := events.Decode(data)
		if err != nil {
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("error of kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		// Whatever decodes must encode again and decode to the same event.
		again, err := events.Encode(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		e2, err := events.Decode(again)
		if err != nil {
			t.Fatal(err)
		}
		if events.Head(e2).ID != events.Head(e).ID {
			t.Fatal("id changed")
		}
	})
}

// Older versions (every v1, and published.v2), byte for byte as the release
// that wrote them did (ids included),
// must still decode: the stream keeps them, and replay reads them.
var v1Events = map[string]string{
	events.TypeBuiltV1:     `{"type":"nixipfs.built.v1","id":"ID","time":"2026-11-25T12:00:00Z","host":"a","store_dir":"/nix/store","drv_path":"/nix/store/y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello-2.12.drv","out_paths":["/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12"]}`,
	events.TypePublishedV1: `{"type":"nixipfs.published.v1","id":"ID","time":"2026-11-25T12:00:00Z","host":"a","store_dir":"/nix/store","store_path":"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12","nar_hash":"sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s","nar_size":120,"references":[],"cache_url":"file:///c","nar_url":"nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar","cid":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","import":{"cid_version":1,"chunker":"size-262144","raw_leaves":true,"hash_function":"sha2-256","max_file_links":174,"nocopy":false},"publisher":{"peer_id":"12D3KooWabc","addrs":[]}}`,
	events.TypePublishedV2: `{"type":"nixipfs.published.v2","id":"ID","time":"2026-12-01T12:00:00Z","host":"a","store_dir":"/nix/store","store_path":"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12","nar_hash":"sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s","nar_size":120,"references":[],"cache_url":"file:///c","nar_url":"nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar","cid":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","import":{"cid_version":1,"chunker":"buzhash","raw_leaves":true,"hash_function":"sha2-256","max_file_links":174,"nocopy":false},"publisher":{"peer_id":"12D3KooWabc","addrs":[]},"deriver":"y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello-2.12.drv","sigs":["cache-1:AAAA"]}`,
	events.TypePinnedV1:    `{"type":"nixipfs.pinned.v1","id":"ID","time":"2026-11-25T12:00:00Z","mirror":"b","cid":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","store_path":"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12","bytes":120,"duration_ms":5,"verified":true,"node":{"peer_id":"12D3KooWdef","addrs":[]}}`,
}

// v1IDs are the ids the previous release computed for v1Events (SHA-256
// over the type and the id fields, each followed by a NUL), worked out by
// hand: a change to ComputeID that breaks old ids fails decoding below.
var v1IDs = map[string]string{
	events.TypeBuiltV1:     "692d6436791449092566aaa3b7f83b0c4cfad0d701fa0c68ee210793a2cf4611",
	events.TypePublishedV1: "ec9214467ffe8edd5dc79ce82562a444b56c4bf6d72b02bd13cb504eb0561e72",
	events.TypePublishedV2: "01a70df929f180fc1a83f123e9ad96c269723eba1d15eeca1d829a9aa576338b",
	events.TypePinnedV1:    "5496daf0a4eaf853481de057941fec77f5089fc8cd3a7c98ef201acda8600a14",
}

func TestOldVersionsStillDecode(t *testing.T) {
	for _, typ := range events.OldTypes {
		data := []byte(strings.Replace(v1Events[typ], `"ID"`, `"`+v1IDs[typ]+`"`, 1))
		e, err := events.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if got := events.Head(e).Type; got != typ {
			t.Errorf("%s decoded as %s", typ, got)
		}
		if events.Current(typ) == typ {
			t.Errorf("%s: Current says it is the newest version", typ)
		}
		// A v1 event may not carry v2 fields: its schema is frozen.
		var m map[string]any
		json.Unmarshal(data, &m)
		switch typ {
		case events.TypeBuiltV1:
			m["job"] = "p:j:x"
		case events.TypePublishedV1:
			m["deriver"] = "y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello-2.12.drv"
		case events.TypePublishedV2:
			m["ipfs_sigs"] = []string{"cache-1:AAAA"}
		case events.TypePinnedV1:
			m["announce_addrs"] = []string{"/ip4/192.0.2.1/tcp/4001"}
		}
		bad, _ := json.Marshal(m)
		if _, err := events.Decode(bad); err == nil {
			t.Errorf("%s with a v2 field: accepted", typ)
		}
	}
}

func TestNewVersionFields(t *testing.T) {
	s := samples()
	b := s[0].(*events.Built)
	hookID := b.ID
	b.Job, b.HydraBuild = "nixpkgs:trunk:hello.x86_64-linux", 42
	events.Seal(b)
	if b.ID == hookID {
		t.Error("a build reported with its Hydra job has the id of the hook's report: one would be dropped as a duplicate")
	}
	p := s[1].(*events.Published)
	p.Deriver = "y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello-2.12.drv"
	p.Sigs = []string{"cache.example.org-1:" + strings.Repeat("A", 86) + "=="}
	p.CA = "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	pin := s[2].(*events.Pinned)
	pin.AnnounceAddrs = []string{"/dns4/mirror.example.org/tcp/4001"}
	ret := &events.Retired{Host: "a", StoreDir: "/nix/store", StorePath: p1,
		NarHash: p.NarHash, NarSize: 120, CID: cid, Reason: "not in the closure of any live root"}
	for _, e := range []events.Event{b, p, pin, ret} {
		events.Seal(e)
		data, err := events.Encode(e)
		if err != nil {
			t.Fatalf("%T: %v", e, err)
		}
		got, err := events.Decode(data)
		if err != nil {
			t.Fatalf("%T: %v", e, err)
		}
		if events.Head(got).Type != events.Current(events.Head(got).Type) {
			t.Errorf("%T sealed as an old version %s", e, events.Head(got).Type)
		}
	}
	bad := *p
	bad.Sigs = []string{"no-colon"}
	events.Seal(&bad)
	if _, err := events.Encode(&bad); err == nil {
		t.Error("a signature without a key name: accepted")
	}
	badRet := *ret
	badRet.StorePath = "/etc/passwd"
	events.Seal(&badRet)
	if _, err := events.Encode(&badRet); err == nil {
		t.Error("a retired path outside the store: accepted")
	}
	// Encode does not decode its output again; it still checks all
	// Decode does: the schema (a reason longer than its maxLength, which
	// Validate does not look at) and the type Seal wrote.
	long := *ret
	long.Reason = strings.Repeat("r", 1025)
	events.Seal(&long)
	if _, err := events.Encode(&long); err == nil {
		t.Error("a retirement reason past the schema's maxLength: encoded")
	} else if data, _ := json.Marshal(&long); true {
		if _, derr := events.Decode(data); derr == nil {
			t.Error("Decode accepts what Encode refused")
		}
	}
	wrong := *ret
	events.Seal(&wrong)
	events.Head(&wrong).Type = events.TypeBuilt
	if _, err := events.Encode(&wrong); err == nil {
		t.Error("a retired event whose header says built: encoded")
	}
}
