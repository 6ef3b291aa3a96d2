package kubod

// Role is what a kubo node does in nix-ipfs; each gets its own settings
// (docs/OPERATIONS.md, "kubo on each host"). deploy/kubo/ holds the same
// settings as container init scripts for docker-compose.yml, and a test
// keeps the two in step.
type Role string

const (
	// Origin is host A's node: the publisher adds every NAR to it.
	Origin Role = "origin"
	// Mirror is host B's node: it pins every NAR and serves clients.
	Mirror Role = "mirror"
	// Client is host C's node, which a substituter reads NARs through.
	Client Role = "client"
)

// Setting is one kubo config key and its JSON value, as `ipfs config
// --json KEY VALUE` sets it.
type Setting struct{ Key, JSON string }

// Settings returns what nix-ipfs sets in the config of a node of role r.
//
// Provide: a cache of a million blocks cannot be announced block by block
// (kubo's "all", its default), so A and B announce the root CID of each NAR
// only ("roots"): a NAR is always fetched whole, and a client that found
// the root's provider asks the same peer for the rest over bitswap. The
// sweep provider spreads the reprovide cycle over its 22 h instead of a
// burst. Clients announce nothing: they find the mirrors through the
// cache's mirror list and peer with them (docs/BENCHMARKS.md counts the
// records each choice makes).
//
// Filestore: the publisher adds NARs to the origin by reference
// (--ipfs-nocopy), so the cache's NAR is the only copy on host A.
//
// Resources: Swarm.ResourceMgr.MaxMemory bounds the libp2p stack only
// (kubo's default is half of the machine's memory); bound the whole
// process with GOMEMLIMIT, above it. A mirror keeps more connections
// (clients peer with it) than kubo's default 32-96.
//
// Kept blocks: a client's kubo keeps the blocks it fetched, unpinned, as a
// bounded cache (Datastore.StorageMax, collected when the daemon runs with
// --enable-gc), so that the next upgrade moves only what changed without
// pinning a second copy of the Nix store (docs/OPERATIONS.md, "What a
// client keeps").
//
// Fan-out: a mirror serves with kubo's own bitswap settings, written as
// {} so that a node set up with the former throttle (one worker, one block
// in flight per peer) loses it. The throttle made clients of one LAN that
// all ask the mirror take more from each other (1.5x the closure for six);
// the substituter's fleet now keeps all but one client of a LAN off the
// mirror (package fleet, 1.0x), and the throttle's single worker only
// slowed the mirror for everyone else (docs/BENCHMARKS.md, fan-out;
// docs/OPERATIONS.md, "A fleet on one network").
func Settings(r Role) []Setting {
	switch r {
	case Origin:
		return []Setting{
			{"Experimental.FilestoreEnabled", `true`},
			{"Provide.Strategy", `"roots"`},
			{"Provide.DHT.SweepEnabled", `true`},
			{"Swarm.ResourceMgr.MaxMemory", `"1GiB"`},
		}
	case Mirror:
		return []Setting{
			{"Provide.Strategy", `"roots"`},
			{"Provide.DHT.SweepEnabled", `true`},
			{"Swarm.ResourceMgr.MaxMemory", `"2GiB"`},
			{"Swarm.ConnMgr.LowWater", `200`},
			{"Swarm.ConnMgr.HighWater", `400`},
			{"Swarm.ConnMgr.GracePeriod", `"1m"`},
			{"Internal.Bitswap", `{}`},
		}
	case Client:
		return []Setting{
			{"Provide.Enabled", `false`},
			{"Routing.Type", `"autoclient"`},
			{"Swarm.ResourceMgr.MaxMemory", `"512MiB"`},
			{"Datastore.StorageMax", `"10GB"`},
			{"Datastore.StorageGCWatermark", `90`},
		}
	}
	return nil
}
