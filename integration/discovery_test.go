package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// TestDiscoveryWithoutDHT: a client finds the mirrors through the cache's
// mirror list alone. Host A builds and publishes a closure; the mirror
// binary pins it on kubo B and announces one address of B
// (--announce-addr); A's publisher lists B in the cache's mirror list,
// which `nix-ipfs serve` serves. Client C's kubo has no content routing
// (Routing.Type none, no bootstrap peers) and no connection to anyone.
// With A's NAR files deleted and A's kubo stopped, stock Nix copies the
// closure through C's substituter, every NAR from IPFS: the substituter
// read the list and peered C's kubo with B. Then A's cache server stops
// too, and a second such client whose upstreams are the dead A and B's own
// cache (mirror --cache-dir, which keeps the list as well) does the same.
func TestDiscoveryWithoutDHT(t *testing.T) {
	a := newHostA(t)
	a.startPublisher(t)
	b := testenv.StartKubo(t)
	selfB, _ := peerAddr(t, b)
	announce := selfB.Addrs[0]
	bin := filepath.Join(a.bin, "nix-ipfs")
	bDir := filepath.Join(t.TempDir(), "cache-b")
	mir := testenv.StartProc(t, bin, []string{"mirror", "--name", "b", "--announce-addr", announce,
		"--cache-dir", bDir, "--listen", "127.0.0.1:0"}, mirEnv(a.nats.URL, b.API)...)
	bURLRE := regexp.MustCompile(`mirror cache listening\s.*"addr": "([^"]+)"`)
	var bURL string
	testenv.Eventually(t, 30*time.Second, "B's cache listening", func() bool {
		data, _ := os.ReadFile(mir.Log)
		if m := bURLRE.FindSubmatch(data); m != nil {
			bURL = "http://" + string(m[1])
		}
		return bURL != "" && httpOK(bURL+"/nix-cache-info")
	})

	top := a.nix.Build(t, richClosure(testenv.Nonce()))[0]
	closure := closureOf(t, a.nix, top)
	infos := a.waitPublished(t, closure, 2*time.Minute)
	var cids []string
	for _, p := range closure {
		cids = append(cids, infos[p].IPFSHash)
	}
	testenv.Eventually(t, 2*time.Minute, "mirror B pinning the closure", func() bool {
		return len(mirMissing(mirPins(t, b), cids)) == 0
	})

	// The publisher lists B with the address it announced, not the ones
	// its node reports; B's own cache keeps the same list.
	for _, dir := range []string{a.cache, bDir} {
		listFile := filepath.Join(dir, mirrorlist.FileName)
		testenv.Eventually(t, time.Minute, "B in "+listFile, func() bool {
			data, err := os.ReadFile(listFile)
			if err != nil {
				return false
			}
			l, err := mirrorlist.Parse(data)
			if err != nil {
				t.Fatalf("mirror list %s does not parse: %v\n%s", listFile, err, data)
			}
			return len(l.Mirrors) == 1 && l.Mirrors[0].Name == "b" && l.Mirrors[0].PeerID == selfB.PeerID &&
				l.Mirrors[0].Announced && len(l.Mirrors[0].Addrs) == 1 && l.Mirrors[0].Addrs[0] == announce
		})
	}

	// Only B has the NARs now.
	nars, _ := filepath.Glob(filepath.Join(a.cache, "nar", "*"))
	if len(nars) < len(closure) {
		t.Fatalf("%d NAR files in A's cache for %d paths", len(nars), len(closure))
	}
	for _, f := range nars {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	a.kubo.Stop(t)

	serveAddr := freeAddr(t)
	serve := testenv.StartProc(t, bin, []string{"serve", "--cache-dir", a.cache, "--listen", serveAddr})
	upstream := "http://" + serveAddr
	testenv.Eventually(t, 30*time.Second, "nix-ipfs serve answering", func() bool { return httpOK(upstream + "/" + mirrorlist.FileName) })

	c := testenv.StartKubo(t, testenv.KuboConfig("Routing.Type", `"none"`), testenv.KuboConfig("Bootstrap", `[]`))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if peers, err := c.Client.Peers(ctx); err != nil || len(peers) != 0 {
		t.Fatalf("C before the substituter: peers %v (%v), want none", peers, err)
	}
	if got := strings.TrimSpace(c.IPFS(t, "config", "Routing.Type")); got != "none" {
		t.Fatalf("C's Routing.Type is %q", got)
	}

	s := startSubstituterProc(t, a.bin, upstream, "--kubo-api", c.API)
	// Peered before it served: StartPeering runs before the listener.
	if !s.logHas(t, `mirror peering.*"peers": 1.*`+regexp.QuoteMeta(selfB.PeerID)) {
		t.Fatalf("the substituter did not peer with B:\n%s", s.Tail(30))
	}
	var ls struct {
		Peers []struct {
			ID    string
			Addrs []string
		}
	}
	if err := json.Unmarshal([]byte(c.IPFS(t, "swarm", "peering", "ls", "--enc=json")), &ls); err != nil {
		t.Fatal(err)
	}
	if len(ls.Peers) != 1 || ls.Peers[0].ID != selfB.PeerID {
		t.Fatalf("C's peering: %+v, want B (%s)", ls.Peers, selfB.PeerID)
	}

	checkStockNixCopy(t, a, top, s.URL)
	s.waitNars(t, float64(len(closure)), `source="ipfs"`)
	if got := s.nars(t, `source="upstream"`) + s.nars(t, `source="none"`); got != 0 {
		t.Errorf("%v NARs not from IPFS", got)
	}
	if got := scrapeCounter(t, s.metrics, "nixipfs_substituter_mirror_peers"); got != 1 {
		t.Errorf("nixipfs_substituter_mirror_peers = %v, want 1", got)
	}

	t.Run("ListFromMirrorCache", func(t *testing.T) {
		serve.Signal(syscall.SIGTERM)
		serve.Wait(30 * time.Second)
		c2 := testenv.StartKubo(t, testenv.KuboConfig("Routing.Type", `"none"`), testenv.KuboConfig("Bootstrap", `[]`))
		s2 := startSubstituterProc(t, a.bin, upstream, "--upstream", bURL, "--kubo-api", c2.API)
		if !s2.logHas(t, `mirror peering.*"peers": 1.*`+regexp.QuoteMeta(selfB.PeerID)) {
			t.Fatalf("the substituter did not peer with B through B's cache:\n%s", s2.Tail(30))
		}
		checkStockNixCopy(t, a, top, s2.URL)
		s2.waitNars(t, float64(len(closure)), `source="ipfs"`)
	})
}
