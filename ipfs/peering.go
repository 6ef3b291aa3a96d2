package ipfs

import (
	"context"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// PeeringAdd puts peers into the daemon's peering subsystem (`ipfs swarm
// peering add`): it keeps a connection to each, redialling with backoff
// when one drops, and bitswap asks connected peers for blocks before any
// content routing. addrs are multiaddrs ending in /p2p/<peer ID>; several
// for one peer are all kept. The daemon does not save this to its
// config, so a restarted daemon must be told again.
func (k *Kubo) PeeringAdd(ctx context.Context, addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	for _, a := range addrs {
		if !strings.Contains(a, "/p2p/") {
			return errs.Errorf(errs.Invalid, "ipfs swarm peering add %q: no /p2p/<peer ID>", a)
		}
	}
	err := k.api.Request("swarm/peering/add", addrs...).Exec(ctx, nil)
	return k.fail(ctx, err, "swarm peering add (%d addresses)", len(addrs))
}

// PeeringRemove takes peers (by ID) out of the daemon's peering subsystem.
func (k *Kubo) PeeringRemove(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	err := k.api.Request("swarm/peering/rm", ids...).Exec(ctx, nil)
	return k.fail(ctx, err, "swarm peering rm %s", strings.Join(ids, " "))
}

// PeeringList returns the peers in the daemon's peering subsystem.
func (k *Kubo) PeeringList(ctx context.Context) ([]Node, error) {
	var out struct {
		Peers []struct {
			ID    string
			Addrs []string
		}
	}
	if err := k.api.Request("swarm/peering/ls").Exec(ctx, &out); err != nil {
		return nil, k.fail(ctx, err, "swarm peering ls")
	}
	nodes := make([]Node, 0, len(out.Peers))
	for _, p := range out.Peers {
		nodes = append(nodes, Node{PeerID: p.ID, Addrs: p.Addrs})
	}
	return nodes, nil
}

// Peers returns the IDs of the peers the daemon has a connection to.
func (k *Kubo) Peers(ctx context.Context) ([]string, error) {
	var out struct {
		Peers []struct{ Peer string }
	}
	if err := k.api.Request("swarm/peers").Exec(ctx, &out); err != nil {
		return nil, k.fail(ctx, err, "swarm peers")
	}
	ids := make([]string, 0, len(out.Peers))
	for _, p := range out.Peers {
		ids = append(ids, p.Peer)
	}
	return ids, nil
}

// Conns returns the daemon's connections: each peer with the address it
// is connected on (a peer connected twice appears twice).
func (k *Kubo) Conns(ctx context.Context) ([]Node, error) {
	var out struct {
		Peers []struct{ Addr, Peer string }
	}
	if err := k.api.Request("swarm/peers").Exec(ctx, &out); err != nil {
		return nil, k.fail(ctx, err, "swarm peers")
	}
	nodes := make([]Node, 0, len(out.Peers))
	for _, p := range out.Peers {
		nodes = append(nodes, Node{PeerID: p.Peer, Addrs: []string{p.Addr}})
	}
	return nodes, nil
}

// Disconnect closes the daemon's connections to peer id (`ipfs swarm
// disconnect /p2p/<id>`). A peer not connected is not an error.
func (k *Kubo) Disconnect(ctx context.Context, id string) error {
	err := k.api.Request("swarm/disconnect", "/p2p/"+id).Exec(ctx, nil)
	if err != nil && strings.Contains(err.Error(), "not connected") {
		return nil
	}
	return k.fail(ctx, err, "swarm disconnect %s", id)
}

// Wants returns how many blocks peer id has asked the daemon for and not
// yet cancelled (`ipfs bitswap wantlist --peer`): a peer fetching now.
func (k *Kubo) Wants(ctx context.Context, id string) (int, error) {
	var out struct{ Keys []any }
	if err := k.api.Request("bitswap/wantlist").Option("peer", id).Exec(ctx, &out); err != nil {
		return 0, k.fail(ctx, err, "bitswap wantlist --peer %s", id)
	}
	return len(out.Keys), nil
}
