package mirrorlist

import (
	"testing"
)

// FuzzParse: no document makes Parse or Policy.Peers panic, and every peer
// Policy returns is within its bounds and dialable as it says.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"type":"nixipfs.mirrors.v1","updated":"2026-11-30T12:00:00Z","mirrors":[{"name":"b","peer_id":"` + peerB + `","addrs":["/ip4/1.2.3.4/tcp/4001","/ip4/127.0.0.1/tcp/4001"],"announced":true,"last_pinned":"2026-11-30T12:00:00Z"}]}`))
	f.Add([]byte(`{"type":"nixipfs.mirrors.v2","mirrors":[{"peer_id":"` + peerC + `","addrs":["/dns4/x/udp/1/quic-v1/webtransport","/unix/x"]},{"peer_id":"` + peerC + `","addrs":["/ip6/::1/tcp/1/p2p/` + peerC + `"]}]}`))
	f.Add([]byte(`{"type":"nixipfs.mirrors.v1","mirrors":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data)
		if err != nil {
			return
		}
		for _, allow := range []bool{false, true} {
			p := Policy{MaxPeers: 3, MaxAddrs: 2, AllowPrivate: allow}
			peers, _ := p.Peers(l)
			if len(peers) > 3 {
				t.Fatalf("%d peers over the bound", len(peers))
			}
			for _, pe := range peers {
				if len(pe.Addrs) == 0 || len(pe.Addrs) > 2 {
					t.Fatalf("peer %s with %d addresses", pe.ID, len(pe.Addrs))
				}
				for _, a := range pe.P2PAddrs() {
					if _, err := ParsePeer(a); err != nil {
						t.Fatalf("accepted address does not parse back: %v", err)
					}
				}
			}
		}
	})
}
