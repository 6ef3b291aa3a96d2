package peering

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// Two LAN clients whose IDs sort before peerSelf ("12D3KooWC...").
const (
	peerLAN1 = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	peerLAN2 = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
)

func (f *fakePeering) setConns(n ...ipfs.Node) {
	f.mu.Lock()
	f.conns = n
	f.mu.Unlock()
}

func (f *fakePeering) fleetState() (peered bool, gone []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, peered = f.peering[peerB]
	return peered, slices.Clone(f.gone)
}

// TestFleetSeeding: with two LAN clients ahead of it, a client lets go of
// the mirror (out of kubo's peering, disconnected); a Fallback brings it
// back at once and holds it; the hold ends and the mirror is let go of
// again, but not while a fetch is going on; a client whose LAN shrinks
// takes the mirror back; and with seeding off every client keeps it.
func TestFleetSeeding(t *testing.T) {
	lan := []ipfs.Node{
		{PeerID: peerLAN1, Addrs: []string{"/ip4/192.168.1.10/tcp/4001"}},
		{PeerID: peerLAN2, Addrs: []string{"/ip4/127.0.0.1/udp/4001/quic-v1"}},
		{PeerID: peerB, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}, // the mirror itself, on loopback: not a client
	}
	mirror := "/ip4/127.0.0.1/tcp/4001/p2p/" + peerB
	start := func(t *testing.T, seeders int, conns []ipfs.Node) (*fakePeering, *Peerer) {
		kubo := &fakePeering{peering: map[string][]string{}, conns: conns}
		var mc Config
		mc.Peers = config.Strings{mirror}
		mc.Refresh, mc.Seeders = -1, seeders
		if err := mc.Validate(false); err != nil {
			t.Fatal(err)
		}
		o := mc.Options(kubo)
		o.FleetCheck, o.FallbackHold = 10*time.Millisecond, 200*time.Millisecond
		p := newPeerer(t, "file://"+t.TempDir(), o, nil, 0)
		ctx, cancel := context.WithCancel(context.Background())
		wait := p.Start(ctx)
		t.Cleanup(func() { cancel(); wait() })
		return kubo, p
	}

	t.Run("third_of_three", func(t *testing.T) {
		kubo, p := start(t, 2, lan)
		if peered, gone := kubo.fleetState(); peered || !slices.Contains(gone, peerB) {
			t.Fatalf("third client of the LAN: peered %v, disconnected %v; want the mirror let go of", peered, gone)
		}
		if !p.OnLAN() {
			t.Error("OnLAN false with two clients of the LAN connected")
		}
		p.Fallback()
		waitPeering(t, "mirror back after a fallback", func() bool { peered, _ := kubo.fleetState(); return peered })
		done := p.Fetching()
		time.Sleep(400 * time.Millisecond) // the hold ends; a fetch is going on
		if peered, _ := kubo.fleetState(); !peered {
			t.Fatal("mirror let go of under a fetch")
		}
		done()
		waitPeering(t, "mirror let go of after the hold and the fetch", func() bool { peered, _ := kubo.fleetState(); return !peered })
		// The LAN shrinks to one other client: this one is a seeder now.
		kubo.setConns(lan[1:]...)
		waitPeering(t, "mirror taken back as a seeder", func() bool { peered, _ := kubo.fleetState(); return peered })
	})
	// Its seeders idle, two clients ahead of it fetching: a fallback waits
	// for them, and connects only when the quiet goes on.
	t.Run("waits_for_fetching_peers", func(t *testing.T) {
		kubo, p := start(t, 2, lan)
		kubo.mu.Lock()
		kubo.wants = map[string]int{peerLAN1: 5, peerLAN2: 3}
		kubo.mu.Unlock()
		first := time.Now()
		p.Fallback()
		time.Sleep(300 * time.Millisecond)
		if peered, _ := kubo.fleetState(); peered {
			t.Fatal("connected to the mirror while two clients before it were fetching")
		}
		for {
			p.Fallback() // still quiet, as the substituter says every stall/4
			if peered, _ := kubo.fleetState(); peered {
				break
			}
			if time.Since(first) > 20*time.Second {
				t.Fatal("never connected while the quiet went on")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if waited := time.Since(first); waited < fallbackPatience {
			t.Errorf("connected after %v of quiet, before the patience of %v", waited, fallbackPatience)
		}
	})
	t.Run("alone", func(t *testing.T) {
		_, p := start(t, 2, lan[2:]) // the mirror only
		if p.OnLAN() {
			t.Error("OnLAN true with only the mirror connected")
		}
	})
	t.Run("second_of_three", func(t *testing.T) {
		kubo, _ := start(t, 2, lan[1:])
		if peered, gone := kubo.fleetState(); !peered || len(gone) > 0 {
			t.Fatalf("second client: peered %v, disconnected %v; want the mirror kept", peered, gone)
		}
	})
	t.Run("off", func(t *testing.T) {
		kubo, _ := start(t, 0, lan)
		time.Sleep(50 * time.Millisecond)
		if peered, gone := kubo.fleetState(); !peered || len(gone) > 0 {
			t.Fatalf("seeding off: peered %v, disconnected %v; want the mirror kept", peered, gone)
		}
	})
}
