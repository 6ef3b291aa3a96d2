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
