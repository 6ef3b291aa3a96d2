package events_test

import (
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/events"
)

func TestLatestEvent(t *testing.T) {
	doc := `{"type":"nixipfs.latestbuild.v1","job":"proj:main:hello"}`
	ev := &events.Latest{Host: "a", StoreDir: "/nix/store", Job: "proj:main:hello", Document: doc}
	events.Seal(ev)
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := got.(*events.Latest); !ok || l.Document != doc || l.Type != events.TypeLatest {
		t.Errorf("decoded %+v", got)
	}
	again := *ev
	again.Host = "b"
	events.Seal(&again)
	if again.ID != ev.ID {
		t.Errorf("the same document announced by two hosts got two ids")
	}
	for name, bad := range map[string]func(*events.Latest){
		"job with a slash": func(e *events.Latest) { e.Job = "../etc" },
		"relative store":   func(e *events.Latest) { e.StoreDir = "nix/store" },
		"not json":         func(e *events.Latest) { e.Document = "{not json" },
		"not an object":    func(e *events.Latest) { e.Document = `"x"` },
		"too large":        func(e *events.Latest) { e.Document = `{"x":"` + strings.Repeat("a", events.MaxLatestDocument) + `"}` },
	} {
		b := *ev
		bad(&b)
		events.Seal(&b)
		if _, err := events.Encode(&b); err == nil {
			t.Errorf("%s: bad latest event accepted", name)
		}
	}
}
