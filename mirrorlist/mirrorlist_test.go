package mirrorlist

import (
	"fmt"
	"strings"
	"testing"
	"time"

	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/schemas"
)

// Peer IDs made by `ipfs init` (ed25519), and one of the older RSA form.
const (
	peerB = "12D3KooWCMpDvrSw6GVYQ85Pk12ztqRM247pZddW6c8VQz36xAff"
	peerC = "12D3KooWJyLvsygSJX92sA6Jiu6vgH3ddDPvCi73KDnNkh5yc6Rf"
	peerD = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
)

func pinned(mirror, peer string, t time.Time, node []string, announce []string) *events.Pinned {
	p := &events.Pinned{Mirror: mirror, CID: "bafkqaaa", StorePath: "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x",
		Node: events.Node{PeerID: peer, Addrs: node}, AnnounceAddrs: announce}
	p.Time = t
	events.Seal(p)
	return p
}

func TestSetKeepsLatestPerMirrorAndValidates(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s := NewSet()
	if !s.Add(pinned("b", peerB, t0, []string{"/ip4/10.0.0.2/tcp/4001"}, nil)) {
		t.Error("first event: no change")
	}
	if s.Add(pinned("b", peerB, t0.Add(time.Minute), []string{"/ip4/10.0.0.2/tcp/4001"}, nil)) {
		t.Error("same mirror, same addresses, later pin: reported as a change (the file would churn)")
	}
	if !s.Add(pinned("b", peerB, t0.Add(2*time.Minute), []string{"/ip4/10.0.0.2/tcp/4001"}, []string{"/dns4/b.example.org/tcp/4001"})) {
		t.Error("announced addresses: no change")
	}
	if s.Add(pinned("b", peerD, t0, []string{"/ip4/10.0.0.9/tcp/4001"}, nil)) {
		t.Error("an older event replaced a newer one")
	}
	s.Add(pinned("c", peerC, t0.Add(3*time.Minute), []string{"/ip4/5.6.7.7/udp/4001/quic-v1"}, nil))
	l := s.List(t0.Add(time.Hour))
	if len(l.Mirrors) != 2 || l.Mirrors[0].Name != "c" || l.Mirrors[1].Name != "b" {
		t.Fatalf("mirrors %+v, want c then b (most recent first)", l.Mirrors)
	}
	b := l.Mirrors[1]
	if !b.Announced || len(b.Addrs) != 1 || b.Addrs[0] != "/dns4/b.example.org/tcp/4001" || b.PeerID != peerB {
		t.Errorf("b: %+v, want its announced address only", b)
	}
	if l.Mirrors[0].Announced {
		t.Error("c announced nothing but is marked announced")
	}
	data, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.Validate(Type, data); err != nil {
		t.Errorf("the written document does not match its schema: %v\n%s", err, data)
	}
	back, err := Parse(data)
	if err != nil || len(back.Mirrors) != 2 || back.Mirrors[1].Addrs[0] != b.Addrs[0] {
		t.Errorf("round trip: %v %+v", err, back)
	}
	// An empty list is a valid document too (no mirror has confirmed yet).
	empty, _ := NewSet().List(t0).Marshal()
	if err := schemas.Validate(Type, empty); err != nil {
		t.Errorf("empty list: %v\n%s", err, empty)
	}
}

func TestParseRefusesWhatIsNotAList(t *testing.T) {
	for name, doc := range map[string]string{
		"not JSON":    "<html>",
		"wrong type":  `{"type":"nixipfs.pinned.v2","mirrors":[]}`,
		"no type":     `{"mirrors":[]}`,
		"odd version": `{"type":"nixipfs.mirrors.vX","mirrors":[]}`,
		"trailing":    `{"type":"nixipfs.mirrors.v1","mirrors":[]} {}`,
		"wrong shape": `{"type":"nixipfs.mirrors.v1","mirrors":{"a":1}}`,
		"too large":   `{"type":"nixipfs.mirrors.v1","x":"` + strings.Repeat("a", MaxSize) + `"}`,
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A later version with fields this code does not know is read.
	l, err := Parse([]byte(`{"type":"nixipfs.mirrors.v7","new":1,"mirrors":[{"name":"b","peer_id":"` + peerB + `","addrs":["/ip4/1.2.3.4/tcp/1"],"region":"eu"}]}`))
	if err != nil || len(l.Mirrors) != 1 {
		t.Errorf("v7: %v %+v", err, l)
	}
}

// TestPolicyTrimsHostileList: a list written by an attacker who controls the
// upstream cache (or sits in front of a plain-HTTP one) cannot make a client
// dial thousands of peers, its own network, or odd transports.
func TestPolicyTrimsHostileList(t *testing.T) {
	l := &List{Type: Type}
	l.Mirrors = append(l.Mirrors,
		Mirror{Name: "good", PeerID: peerB, Addrs: []string{
			"/ip4/1.2.3.5/tcp/4001", "/dns4/b.example.org/tcp/4001", "/ip6/2a01:4f8::1/udp/4001/quic-v1",
			"/ip4/127.0.0.1/tcp/4001",                              // loopback
			"/ip4/192.168.1.1/tcp/4001",                            // private
			"/ip4/169.254.1.1/tcp/4001",                            // link-local
			"/dns4/localhost/tcp/4001",                             // a local name
			"/unix/run/x.sock",                                     // odd protocol
			"/ip4/1.2.3.5/tcp/4001/p2p/" + peerC,                   // another peer's
			"/ip4/1.2.3.6/tcp/4001/p2p-circuit",                    // relay
			"/ip4/1.2.3.7/tcp/0",                                   // no port
			"not a multiaddr", strings.Repeat("/ip4/1.1.1.1", 400), // garbage
			"/ip4/1.2.3.5/tcp/4001/p2p/" + peerB, // its own suffix: accepted
		}},
		Mirror{Name: "garbage-id", PeerID: "not-a-peer", Addrs: []string{"/ip4/1.2.3.8/tcp/4001"}},
		Mirror{Name: "only-private", PeerID: peerD, Addrs: []string{"/ip4/10.1.1.1/tcp/4001"}},
	)
	for i := 0; i < 5000; i++ {
		l.Mirrors = append(l.Mirrors, Mirror{Name: fmt.Sprint("m", i), PeerID: peerC, Addrs: []string{fmt.Sprintf("/ip4/5.6.7.%d/tcp/%d", i%250+1, 4001+i)}})
	}
	peers, dropped := Policy{}.Peers(l)
	if len(peers) != 2 {
		t.Fatalf("%d peers, want 2 (good, and the 5000 entries of one peer merged): %+v", len(peers), peers)
	}
	if peers[0].ID != peerB || len(peers[0].Addrs) != 3 {
		t.Errorf("good mirror: %v, want its 3 public addresses", peers[0].P2PAddrs())
	}
	if len(peers[1].Addrs) != DefaultMaxAddrs {
		t.Errorf("merged peer kept %d addresses, want the cap %d", len(peers[1].Addrs), DefaultMaxAddrs)
	}
	if len(dropped) == 0 || len(dropped) > 21 {
		t.Errorf("%d reasons (want some, capped): %q", len(dropped), dropped)
	}
	all := strings.Join(dropped, "\n")
	for _, want := range []string{"not public", "/unix/run/x.sock\": not an IP", "p2p-circuit not accepted", "names another peer", "port 0", "garbage-id", "only-private", "and "} {
		if !strings.Contains(all, want) {
			t.Errorf("no reason mentions %q:\n%s", want, all)
		}
	}

	// Many distinct peers: the first MaxPeers are kept.
	many := &List{Type: Type}
	for i := 0; i < 3000; i++ {
		many.Mirrors = append(many.Mirrors, Mirror{Name: fmt.Sprint("m", i), PeerID: fakePeer(i), Addrs: []string{"/ip4/5.6.7.1/tcp/4001"}})
	}
	peers, _ = Policy{MaxPeers: 5}.Peers(many)
	if len(peers) != 5 || peers[0].ID != fakePeer(0) {
		t.Errorf("%d peers, want the first 5", len(peers))
	}
}

// TestPolicyPrivateOnlyWhenUpstreamIsPrivate: the same list gives loopback
// and private addresses to a client whose upstream is private, and none to
// one whose upstream is public.
func TestPolicyPrivateOnlyWhenUpstreamIsPrivate(t *testing.T) {
	l := &List{Type: Type, Mirrors: []Mirror{{Name: "b", PeerID: peerB, Addrs: []string{
		"/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.2/tcp/4001", "/ip6/::1/tcp/4001", "/ip4/1.2.3.5/tcp/4001"}}}}
	pub, _ := Policy{}.Peers(l)
	priv, _ := Policy{AllowPrivate: true}.Peers(l)
	if len(pub) != 1 || len(pub[0].Addrs) != 1 || pub[0].Addrs[0].String() != "/ip4/1.2.3.5/tcp/4001" {
		t.Errorf("public upstream: %+v", pub)
	}
	if len(priv) != 1 || len(priv[0].Addrs) != 4 {
		t.Errorf("private upstream: %+v", priv)
	}
	// The client itself is never a peer of its own.
	if self, _ := (Policy{AllowPrivate: true, Self: peerB}).Peers(l); len(self) != 0 {
		t.Errorf("self listed: %+v", self)
	}
}

func TestParsePeer(t *testing.T) {
	p, err := ParsePeer("/ip4/127.0.0.1/tcp/4001/p2p/" + peerB)
	if err != nil || p.ID != peerB || p.P2PAddrs()[0] != "/ip4/127.0.0.1/tcp/4001/p2p/"+peerB {
		t.Errorf("%+v %v", p, err)
	}
	for _, bad := range []string{"/ip4/127.0.0.1/tcp/4001", "/p2p/" + peerB, "x", "/unix/a/p2p/" + peerB} {
		if _, err := ParsePeer(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// fakePeer returns distinct valid identity-multihash peer IDs.
func fakePeer(i int) string {
	ids := []string{peerB, peerC, peerD}
	if i < len(ids) {
		return ids[i]
	}
	h, _ := mh.Sum([]byte(fmt.Sprint("peer", i)), mh.SHA2_256, -1)
	return h.B58String()
}
