package upstream

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

const peerB = "12D3KooWJyLvsygSJX92sA6Jiu6vgH3ddDPvCi73KDnNkh5yc6Rf"

// TestUpstreamPrivateRule: listed private addresses are accepted only when
// the upstream itself is private; a name that does not resolve counts as
// public.
func TestUpstreamPrivateRule(t *testing.T) {
	lookup := func(_ context.Context, _, host string) ([]netip.Addr, error) {
		switch host {
		case "cache.lan":
			return []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::1")}, nil
		case "cache.example.org":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		case "mixed.example.org":
			return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("93.184.215.14")}, nil
		}
		return nil, errors.New("no such host")
	}
	for host, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.1.2.3": true, "172.16.0.9": true, "169.254.3.3": true, "100.64.1.1": true,
		"localhost": true, "cache.localhost": true, "cache.lan": true,
		"1.2.3.4": false, "2a01:4f8::1": false, "cache.example.org": false, "mixed.example.org": false, "unknown.invalid": false,
	} {
		if got := hostIsPrivate(context.Background(), host, lookup); got != want {
			t.Errorf("%s: private %v, want %v", host, got, want)
		}
	}
	l := &mirrorlist.List{Type: mirrorlist.Type, Mirrors: []mirrorlist.Mirror{{Name: "b", PeerID: peerB,
		Addrs: []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.2/tcp/4001", "/dns4/b.example.org/tcp/4001"}}}}
	for host, want := range map[string]int{"127.0.0.1": 3, "cache.example.org": 1} {
		peers, _ := mirrorlist.Policy{AllowPrivate: hostIsPrivate(context.Background(), host, lookup)}.Peers(l)
		if len(peers) != 1 || len(peers[0].Addrs) != want {
			t.Errorf("upstream %s: %+v, want %d addresses", host, peers, want)
		}
	}
}
