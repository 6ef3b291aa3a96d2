package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The hook runs after every build and must start fast: it links neither
// kubo nor the NATS server (those live in bin/nix-ipfs).
func TestHookLinksNeitherKuboNorNATSServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/ipfs/kubo", "github.com/nats-io/nats-server", "modernc.org/sqlite"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("nix-ipfs-hook links %s", dep)
			}
		}
	}
}
