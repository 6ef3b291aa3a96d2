package retention

import (
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/latest"
)

// ParseDrvName is latest.ParseDrvName: retention counts builds per job the
// way the latest-build documents name jobs.
func ParseDrvName(s string) (name, version string) { return latest.ParseDrvName(s) }

// JobOf is latest.JobOf.
func JobOf(ev *events.Built) string { return latest.JobOf(ev) }
