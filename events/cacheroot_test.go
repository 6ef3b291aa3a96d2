package events_test

import (
	"testing"

	"github.com/nix-ipfs/nix-ipfs/events"
)

func TestCacheRootEvent(t *testing.T) {
	ev := &events.CacheRoot{Host: "a", StoreDir: "/nix/store", Root: cid,
		Publisher: events.Node{PeerID: "12D3KooWfake", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}}
	events.Seal(ev)
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := got.(*events.CacheRoot); !ok || r.Root != cid || r.Type != events.TypeCacheRoot {
		t.Errorf("decoded %+v", got)
	}
	again := *ev
	again.Host, again.Publisher.Addrs = "b", nil
	events.Seal(&again)
	if again.ID != ev.ID {
		t.Errorf("the same root announced twice got two ids")
	}
	for _, bad := range []func(*events.CacheRoot){
		func(e *events.CacheRoot) { e.Root = "not-a-cid" },
		func(e *events.CacheRoot) { e.StoreDir = "relative" },
	} {
		b := *ev
		bad(&b)
		events.Seal(&b)
		if _, err := events.Encode(&b); err == nil {
			t.Errorf("bad cacheroot event %+v accepted", b)
		}
	}
}
