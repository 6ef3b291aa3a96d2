// Package fleet decides which clients of one network fetch from the
// mirrors. Clients on one LAN fetching the same closure at once cost a
// mirror one copy per client that asks it; asked by a few, it sends about
// one copy, and the others take the blocks from them over bitswap
// (docs/OPERATIONS.md, "A fleet on one network"). kubo's bitswap asks every
// connected peer and cannot be told to prefer its LAN, so the way to keep
// a client's requests off the mirror is to keep it unconnected: only the
// first Seeders clients of a LAN, by peer ID, stay peered with the
// mirrors; the others connect when their LAN does not deliver (a stall),
// and stay connected for a while.
//
// The clients of a LAN are the peers a client's kubo is connected to on a
// loopback, private or link-local address that are not mirrors: kubo's
// mDNS connects them, or an operator's peering. Every client computes the
// same ranking from the same set, so the fleet agrees without talking;
// where views differ (a peer not yet discovered), more or fewer clients
// seed for a while, which costs bytes or one stall, never data.
package fleet

import (
	"slices"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// DefaultSeeders is how many clients of one LAN keep the mirrors. One:
// two seeders fetching at once in independent orders ask the mirror for
// the same blocks before either holds them, and it sent 1.7x the closure
// to six clients where one seeder cost it 1.0x (docs/BENCHMARKS.md,
// section 11). A seeder that is not fetching what the others fetch costs
// them one stall (peering's Fallback), after which the first of the
// clients fetching takes the mirrors.
const DefaultSeeders = 1

// Peer is a connection of the client's kubo: the remote peer and the
// address it is connected on.
type Peer struct {
	ID   string
	Addr string
}

// LAN returns the IDs of the peers that are clients of the same network:
// connected on a non-public address (loopback, private, link-local), and
// not in mirrors. An address that does not parse counts as public.
func LAN(peers []Peer, mirrors map[string]bool) []string {
	var out []string
	for _, p := range peers {
		if mirrors[p.ID] || p.ID == "" {
			continue
		}
		a, err := ma.NewMultiaddr(p.Addr)
		if err != nil || manet.IsPublicAddr(a) {
			continue
		}
		out = append(out, p.ID)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Seeds reports whether self is one of the first seeders of the fleet
// made of self and lan, in the order of their peer IDs. seeders < 1 means
// every client seeds (the mirrors are kept by all, as without a fleet); a
// client alone always seeds.
func Seeds(self string, lan []string, seeders int) bool {
	if seeders < 1 {
		return true
	}
	below := 0
	for _, id := range lan {
		if id < self {
			below++
		}
	}
	return below < seeders
}
