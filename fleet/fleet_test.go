package fleet

import (
	"fmt"
	"slices"
	"testing"
)

func TestLAN(t *testing.T) {
	peers := []Peer{
		{ID: "B", Addr: "/ip4/127.0.0.1/tcp/4001"},          // a mirror, on loopback
		{ID: "c1", Addr: "/ip4/192.168.1.7/tcp/4001"},       // private
		{ID: "c2", Addr: "/ip4/127.0.0.1/udp/4001/quic-v1"}, // loopback
		{ID: "c3", Addr: "/ip6/fe80::1/tcp/4001"},           // link-local
		{ID: "far", Addr: "/ip4/8.8.8.8/tcp/4001"},          // public: not the LAN
		{ID: "junk", Addr: "not a multiaddr"},               // refused: counted public
		{ID: "c1", Addr: "/ip4/10.0.0.2/tcp/4001"},          // a second connection
		{ID: "", Addr: "/ip4/10.0.0.3/tcp/4001"},
	}
	got := LAN(peers, map[string]bool{"B": true})
	want := []string{"c1", "c2", "c3"}
	if !slices.Equal(got, want) {
		t.Fatalf("LAN = %v, want %v", got, want)
	}
}

func TestSeeds(t *testing.T) {
	for _, tc := range []struct {
		self    string
		lan     []string
		seeders int
		want    bool
	}{
		{"m", nil, 2, true},                 // alone
		{"m", []string{"a"}, 2, true},       // second of two
		{"m", []string{"a", "b"}, 2, false}, // third
		{"m", []string{"a", "b"}, 0, true},  // seeding off: everyone keeps the mirrors
		{"a", []string{"b", "c", "d", "e"}, 1, true},
		{"b", []string{"a", "c", "d", "e"}, 1, false},
	} {
		if got := Seeds(tc.self, tc.lan, tc.seeders); got != tc.want {
			t.Errorf("Seeds(%q, %v, %d) = %v, want %v", tc.self, tc.lan, tc.seeders, got, tc.want)
		}
	}
}

// TestFleetAgrees: every member of a fleet, looking at the same set from
// its own place, makes the same choice, and exactly Seeders of them seed.
func TestFleetAgrees(t *testing.T) {
	for _, n := range []int{1, 2, 3, 6, 16} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("12D3KooW%04x", (i*7919)%65536)
		}
		for _, seeders := range []int{1, 2, 3} {
			count := 0
			for i, self := range ids {
				others := append(append([]string{}, ids[:i]...), ids[i+1:]...)
				if Seeds(self, others, seeders) {
					count++
				}
			}
			if want := min(n, seeders); count != want {
				t.Errorf("%d clients, %d seeders: %d seed", n, seeders, count)
			}
		}
	}
}
