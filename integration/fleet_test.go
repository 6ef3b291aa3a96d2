package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestFleetTakesFromTheLAN: three clients on one "LAN" (their kubos
// connected to each other on loopback, as mDNS connects them), each with
// its own substituter in default settings, mirror B the only IPFS source.
// The client first by peer ID keeps B (the default --mirror-seeders 1);
// the other two let go of it. Then:
//   - the seeder fetches a closure with stock Nix, and the other two fetch
//     it after it, at once: every NAR from IPFS, not one byte from B
//     (their bitswap ledgers with B), all from the LAN;
//   - the two fetch a closure the idle seeder does not hold: their LAN
//     gives nothing, so after a stall the first of the clients fetching
//     connects to B, and both get every NAR from IPFS.
func TestFleetTakesFromTheLAN(t *testing.T) {
	a := newHostA(t)
	a.startPublisher(t)
	b := testenv.StartKubo(t)
	selfB, addrB := peerAddr(t, b)
	bin := filepath.Join(a.bin, "nix-ipfs")
	testenv.StartProc(t, bin, []string{"mirror", "--name", "b"}, mirEnv(a.nats.URL, b.API)...)

	nonce := testenv.Nonce()
	shared := a.nix.Build(t, richClosure(nonce+"-shared"))[0]
	alone := a.nix.Build(t, richClosure(nonce+"-alone"))[0]
	var all []string
	for _, top := range []string{shared, alone} {
		all = append(all, closureOf(t, a.nix, top)...)
	}
	infos := a.waitPublished(t, all, 2*time.Minute)
	var cids []string
	for _, p := range all {
		cids = append(cids, infos[p].IPFSHash)
	}
	testenv.Eventually(t, 2*time.Minute, "mirror B pinning both closures", func() bool {
		return len(mirMissing(mirPins(t, b), cids)) == 0
	})
	// Only B has the NARs now.
	nars, _ := filepath.Glob(filepath.Join(a.cache, "nar", "*"))
	for _, f := range nars {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	a.kubo.Stop(t)
	serveAddr := freeAddr(t)
	testenv.StartProc(t, bin, []string{"serve", "--cache-dir", a.cache, "--listen", serveAddr})
	upstream := "http://" + serveAddr
	testenv.Eventually(t, 30*time.Second, "nix-ipfs serve answering", func() bool { return httpOK(upstream + "/nix-cache-info") })

	type client struct {
		kubo *testenv.Kubo
		id   string
		addr string
		sub  *substituterProc
	}
	cs := make([]*client, 3)
	for i := range cs {
		k := testenv.StartKubo(t, testenv.KuboConfig("Routing.Type", `"none"`), testenv.KuboConfig("Bootstrap", `[]`))
		self, addr := peerAddr(t, k)
		cs[i] = &client{kubo: k, id: self.PeerID, addr: addr}
	}
	for i, c := range cs {
		for _, o := range cs[i+1:] {
			c.kubo.IPFS(t, "swarm", "connect", o.addr)
		}
	}
	slices.SortFunc(cs, func(x, y *client) int { return strings.Compare(x.id, y.id) })
	for _, c := range cs {
		c.sub = startSubstituterProc(t, a.bin, upstream, "--kubo-api", c.kubo.API, "--mirror-peer", addrB)
	}
	connectedToB := func(c *client) bool {
		return strings.Contains(c.kubo.IPFS(t, "swarm", "peers"), selfB.PeerID)
	}
	for i, c := range cs {
		if want := i == 0; connectedToB(c) != want {
			t.Fatalf("client %d of 3 (%s): connected to B %v, want %v\n%s", i, c.id, !want, want, c.sub.Tail(20))
		}
	}
	recvFromB := func(c *client) int64 {
		var l struct{ Recv int64 }
		if err := json.Unmarshal([]byte(c.kubo.IPFS(t, "bitswap", "ledger", selfB.PeerID, "--enc=json")), &l); err != nil {
			t.Fatal(err)
		}
		return l.Recv
	}
	both := func(top string) {
		var wg sync.WaitGroup
		for _, c := range cs[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				checkStockNixCopy(t, a, top, c.sub.URL)
			}()
		}
		wg.Wait()
	}
	fromIPFS := func(c *client, n int) {
		t.Helper()
		c.sub.waitNars(t, float64(n), `source="ipfs"`)
		if got := c.sub.nars(t, `source="upstream"`) + c.sub.nars(t, `source="none"`); got != 0 {
			t.Errorf("client %s: %v NARs not from IPFS", c.id, got)
		}
	}

	sharedClosure := closureOf(t, a.nix, shared)
	checkStockNixCopy(t, a, shared, cs[0].sub.URL)
	both(shared)
	for _, c := range cs[1:] {
		fromIPFS(c, len(sharedClosure))
		if got := recvFromB(c); got != 0 {
			t.Errorf("client %s received %d bytes from B, want all from its LAN", c.id, got)
		}
		if connectedToB(c) {
			t.Errorf("client %s connected to B while its LAN held the closure", c.id)
		}
	}

	// A closure the seeder does not hold: a stall, then the first of the
	// two fetching connects to B.
	both(alone)
	for _, c := range cs[1:] {
		fromIPFS(c, len(all))
	}
	if !connectedToB(cs[1]) || recvFromB(cs[1]) == 0 {
		t.Errorf("the first fetching client did not take B after the stall:\n%s", cs[1].sub.Tail(30))
	}
	if !cs[1].sub.logHas(t, "fleet: the LAN gave nothing; connecting to the mirrors") {
		t.Errorf("no fallback to B logged:\n%s", cs[1].sub.Tail(30))
	}
}
