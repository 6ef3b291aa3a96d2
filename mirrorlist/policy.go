package mirrorlist

import (
	"fmt"
	"strings"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Peer is a mirror a client peers with: its ID and the addresses it is
// dialled on, each without /p2p/<ID>.
type Peer struct {
	ID    string
	Name  string // from the list; "" for a peer given by hand
	Addrs []ma.Multiaddr
}

// P2PAddrs returns the addresses with /p2p/<ID> appended, as kubo's
// `swarm peering add` takes them.
func (p Peer) P2PAddrs() []string {
	out := make([]string, len(p.Addrs))
	for i, a := range p.Addrs {
		out[i] = a.String() + "/p2p/" + p.ID
	}
	return out
}

// Defaults of Policy's zero values.
const (
	DefaultMaxPeers = 16
	DefaultMaxAddrs = 8
)

// Policy bounds what a client takes from a mirror list it fetched.
type Policy struct {
	// MaxPeers is the most mirrors peered with (default 16): the first
	// ones in the list, which the publisher orders by recent activity.
	MaxPeers int
	// MaxAddrs is the most addresses kept per mirror (default 8).
	MaxAddrs int
	// AllowPrivate accepts loopback, private, link-local and other
	// non-public addresses. A client whose upstream cache is itself on a
	// private network sets it; one whose upstream is public does not, so a
	// list cannot make it dial into its own network.
	AllowPrivate bool
	// Self is the client's own peer ID, which is never peered with.
	Self string
}

// Peers returns the entries of l that p accepts, and for each entry or
// address it dropped, a reason for the log. Nothing in l makes it fail.
func (p Policy) Peers(l *List) (peers []Peer, dropped []string) {
	maxPeers, maxAddrs := p.MaxPeers, p.MaxAddrs
	if maxPeers <= 0 {
		maxPeers = DefaultMaxPeers
	}
	if maxAddrs <= 0 {
		maxAddrs = DefaultMaxAddrs
	}
	// Reasons are capped too: a hostile list must not flood the log.
	const maxReasons = 20
	skipped := 0
	drop := func(format string, args ...any) {
		if len(dropped) < maxReasons {
			dropped = append(dropped, fmt.Sprintf(format, args...))
		} else {
			skipped++
		}
	}
	index := map[string]int{}
	for i, m := range l.Mirrors {
		if err := checkPeerID(m.PeerID); err != nil {
			drop("entry %d (%.64q): %v", i, m.Name, err)
			continue
		}
		if m.PeerID == p.Self {
			continue
		}
		j, seen := index[m.PeerID]
		if !seen && len(peers) >= maxPeers {
			drop("entries from %d on: more than %d mirrors", i, maxPeers)
			break
		}
		var addrs []ma.Multiaddr
		for k, s := range m.Addrs {
			// A writer keeps MaxAddrs; a reader looks a little further (some
			// may be dropped) but not through thousands.
			if k >= MaxAddrs*4 {
				drop("entry %d (%.64q): addresses from %d on ignored", i, m.Name, k)
				break
			}
			a, err := CheckAddr(s, m.PeerID, p.AllowPrivate)
			if err != nil {
				drop("entry %d (%.64q): %v", i, m.Name, err)
				continue
			}
			addrs = append(addrs, a)
		}
		if !seen {
			if len(addrs) == 0 {
				drop("entry %d (%.64q, %s): no usable address", i, m.Name, m.PeerID)
				continue
			}
			index[m.PeerID] = len(peers)
			peers = append(peers, Peer{ID: m.PeerID, Name: m.Name})
			j = len(peers) - 1
		}
		for _, a := range addrs {
			if len(peers[j].Addrs) >= maxAddrs {
				drop("entry %d (%.64q): more than %d addresses", i, m.Name, maxAddrs)
				break
			}
			if !hasAddr(peers[j].Addrs, a) {
				peers[j].Addrs = append(peers[j].Addrs, a)
			}
		}
	}
	if skipped > 0 {
		dropped = append(dropped, fmt.Sprintf("and %d more", skipped))
	}
	return peers, dropped
}

func hasAddr(list []ma.Multiaddr, a ma.Multiaddr) bool {
	for _, b := range list {
		if b.Equal(a) {
			return true
		}
	}
	return false
}

// The protocols an address may use: IP or DNS, then TCP (plain, or
// WebSockets with or without TLS) or UDP (QUIC, WebTransport). Anything
// else (unix sockets, relays, onion, memory transports) is refused.
var (
	hostProtos = map[int]bool{ma.P_IP4: true, ma.P_IP6: true, ma.P_DNS: true, ma.P_DNS4: true, ma.P_DNS6: true}
	restProtos = map[int]bool{ma.P_TCP: true, ma.P_UDP: true, ma.P_QUIC_V1: true, ma.P_WEBTRANSPORT: true,
		ma.P_CERTHASH: true, ma.P_WS: true, ma.P_WSS: true, ma.P_TLS: true, ma.P_SNI: true}
)

// CheckAddr parses s as an address to dial peer on, without or with a
// trailing /p2p/<peer>, and checks its protocols and, unless allowPrivate,
// that it is public. It returns the address without /p2p/.
func CheckAddr(s, peer string, allowPrivate bool) (ma.Multiaddr, error) {
	if len(s) > 1024 {
		return nil, fmt.Errorf("address of %d bytes", len(s))
	}
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return nil, fmt.Errorf("address %.120q: %v", s, err)
	}
	if rest, last := ma.SplitLast(a); last != nil && last.Protocol().Code == ma.P_P2P {
		if last.Value() != peer {
			return nil, fmt.Errorf("address %.120q: names another peer", s)
		}
		a = rest
	}
	comps := []ma.Component(a)
	if len(comps) < 2 || !hostProtos[comps[0].Protocol().Code] {
		return nil, fmt.Errorf("address %.120q: not an IP or DNS address with a transport", s)
	}
	transport := false
	for _, c := range comps[1:] {
		code := c.Protocol().Code
		if !restProtos[code] {
			return nil, fmt.Errorf("address %.120q: protocol %s not accepted", s, c.Protocol().Name)
		}
		if code == ma.P_TCP || code == ma.P_UDP {
			if transport {
				return nil, fmt.Errorf("address %.120q: two transports", s)
			}
			transport = true
			if c.Value() == "0" {
				return nil, fmt.Errorf("address %.120q: port 0", s)
			}
		}
	}
	if !transport {
		return nil, fmt.Errorf("address %.120q: no TCP or UDP port", s)
	}
	if !allowPrivate && !manet.IsPublicAddr(a) {
		return nil, fmt.Errorf("address %.120q: not public (the upstream cache is public)", s)
	}
	return a, nil
}

// ParsePeer parses an address given by hand (--mirror-peer): a multiaddr
// ending in /p2p/<peer ID>. Private addresses are accepted: the operator
// chose them.
func ParsePeer(s string) (Peer, error) {
	a, err := ma.NewMultiaddr(strings.TrimSpace(s))
	if err != nil {
		return Peer{}, fmt.Errorf("%q: %v", s, err)
	}
	_, last := ma.SplitLast(a)
	if last == nil || last.Protocol().Code != ma.P_P2P {
		return Peer{}, fmt.Errorf("%q: must end in /p2p/<peer ID>", s)
	}
	id := last.Value()
	addr, err := CheckAddr(s, id, true)
	if err != nil {
		return Peer{}, err
	}
	return Peer{ID: id, Addrs: []ma.Multiaddr{addr}}, nil
}

// MergePeers joins peers with the same ID.
func MergePeers(in []Peer) []Peer {
	var out []Peer
	index := map[string]int{}
	for _, p := range in {
		j, ok := index[p.ID]
		if !ok {
			index[p.ID] = len(out)
			out = append(out, Peer{ID: p.ID, Name: p.Name})
			j = len(out) - 1
		}
		for _, a := range p.Addrs {
			if !hasAddr(out[j].Addrs, a) {
				out[j].Addrs = append(out[j].Addrs, a)
			}
		}
	}
	return out
}
