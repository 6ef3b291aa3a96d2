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
// The two clients first by peer ID keep B (the default --mirror-seeders
// 2); the third lets go of it. Then:
//   - the seeders fetch a closure with stock Nix, and the third fetches it
//     after them: every NAR from IPFS, not one byte from B (its bitswap
//     ledger with B), all from its LAN;
//   - the third fetches a closure no LAN peer holds: its LAN gives nothing,
//     so it connects to B after a stall and gets every NAR from IPFS.
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
		if want := i < 2; connectedToB(c) != want {
			t.Fatalf("client %d of 3 (%s): connected to B %v, want %v\n%s", i, c.id, !want, want, c.sub.Tail(20))
		}
	}
	third := cs[2]
	recvFromB := func() int64 {
		var l struct{ Recv int64 }
		if err := json.Unmarshal([]byte(third.kubo.IPFS(t, "bitswap", "ledger", selfB.PeerID, "--enc=json")), &l); err != nil {
			t.Fatal(err)
		}
		return l.Recv
	}

	sharedClosure := closureOf(t, a.nix, shared)
	var wg sync.WaitGroup
	for _, c := range cs[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			checkStockNixCopy(t, a, shared, c.sub.URL)
		}()
	}
	wg.Wait()
	checkStockNixCopy(t, a, shared, third.sub.URL)
	third.sub.waitNars(t, float64(len(sharedClosure)), `source="ipfs"`)
	if got := third.sub.nars(t, `source="upstream"`) + third.sub.nars(t, `source="none"`); got != 0 {
		t.Errorf("the third client: %v NARs not from IPFS", got)
	}
	if got := recvFromB(); got != 0 {
		t.Errorf("the third client received %d bytes from B, want all from its LAN", got)
	}
	if connectedToB(third) {
		t.Error("the third client connected to B while its LAN held the closure")
	}

	// A closure the LAN does not hold: a stall, then B.
	checkStockNixCopy(t, a, alone, third.sub.URL)
	third.sub.waitNars(t, float64(len(all)), `source="ipfs"`)
	if got := third.sub.nars(t, `source="upstream"`) + third.sub.nars(t, `source="none"`); got != 0 {
		t.Errorf("the third client: %v NARs not from IPFS", got)
	}
	if got := recvFromB(); got == 0 {
		t.Error("the third client fetched a closure only B holds without a byte from B")
	}
	if !third.sub.logHas(t, "fleet: connected to the mirrors") {
		t.Errorf("no fallback to B logged:\n%s", third.sub.Tail(30))
	}
}
