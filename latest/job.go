package latest

import (
	"strings"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// ParseDrvName splits a derivation name into its name and version the way
// Nix's builtins.parseDrvName does: the name ends at the first '-' that is
// followed by a character that is not a letter.
// ParseDrvName("hello-2.12.1") is ("hello", "2.12.1");
// ParseDrvName("xorg-server-21") is ("xorg-server", "21").
func ParseDrvName(s string) (name, version string) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '-' && !isAlpha(s[i+1]) {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// JobOf returns the job a built event belongs to: the event's own job
// (Hydra's project:jobset:job) when it names one, else the derivation's name
// without its version, from the derivation path or, failing that, the
// first output's name.
func JobOf(ev *events.Built) string {
	if ev.Job != "" {
		return ev.Job
	}
	p := ev.DrvPath
	if p == "" && len(ev.OutPaths) > 0 {
		p = ev.OutPaths[0]
	}
	base := p[strings.LastIndexByte(p, '/')+1:]
	base = strings.TrimSuffix(base, ".drv")
	if len(base) > storepath.HashLen+1 {
		base = base[storepath.HashLen+1:]
	}
	name, _ := ParseDrvName(base)
	return name
}
