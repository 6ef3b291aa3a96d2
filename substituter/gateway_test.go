package substituter

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs/unixfstest"
)

// The trustless gateway client is unixfs.Gateway (tested there, against
// unixfstest.FakeGateway); these are the Server's answers to what it reads.

// TestGatewayBadBlockFallsBack: through the Server, a gateway returning a
// wrong block makes the NAR come from upstream, counted as block_mismatch;
// with honest blocks it comes from IPFS.
func TestGatewayBadBlockFallsBack(t *testing.T) {
	fg := unixfstest.NewFakeGateway(t)
	gw, err := unixfs.NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.IPFS = gw })
	good := unixfstest.Payload("gw-good", 100000)
	bad := unixfstest.Payload("gw-bad", 100000)
	var goodRoot, badRoot cid.Cid
	goodRoot = fg.Add(t, good, 4096, 8, true, true, false)
	badRoot = fg.Add(t, bad, 4096, 8, true, true, false)
	pg := f.addPath("gw-good", good, func(ni *narinfo.NarInfo) { ni.IPFSHash = goodRoot.String() })
	pb := f.addPath("gw-bad", bad, func(ni *narinfo.NarInfo) { ni.IPFSHash = badRoot.String() })
	leaves := fg.Leaves(t, badRoot)
	fg.Mu.Lock()
	fg.Corrupt[leaves[3]] = true
	fg.Mu.Unlock()

	for _, p := range []*storePath{pg, pb} {
		f.mustGet(http.MethodGet, p.narinfoPath())
		resp, b := f.mustGet(http.MethodGet, p.narPath())
		if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
			t.Fatalf("%s: %d, %d bytes", p.ni.StorePath, resp.StatusCode, len(b))
		}
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "ipfs")
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "upstream", "reason", ReasonBlockMismatch)
	if f.hitsOf(pg.narPath()) != 0 || f.hitsOf(pb.narPath()) != 1 {
		t.Errorf("upstream NAR requests: good %d, bad %d", f.hitsOf(pg.narPath()), f.hitsOf(pb.narPath()))
	}
}

// TestGatewayCARBadBlockFallsBack: through the Server, a block that is
// wrong in the CAR and wrong again alone makes the NAR come from upstream.
func TestGatewayCARBadBlockFallsBack(t *testing.T) {
	fg := unixfstest.NewFakeGateway(t)
	fg.CAR = func(b []byte) []byte { return b }
	gw, err := unixfs.NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.IPFS = gw })
	good, bad := unixfstest.Payload("car-good", 100000), unixfstest.Payload("car-bad", 100000)
	goodRoot := fg.Add(t, good, 4096, 8, true, true, false)
	badRoot := fg.Add(t, bad, 4096, 8, true, true, false)
	pg := f.addPath("car-good", good, func(ni *narinfo.NarInfo) { ni.IPFSHash = goodRoot.String() })
	pb := f.addPath("car-bad", bad, func(ni *narinfo.NarInfo) { ni.IPFSHash = badRoot.String() })
	fg.Mu.Lock()
	fg.Corrupt[fg.Leaves(t, badRoot)[3]] = true
	fg.Mu.Unlock()
	for _, p := range []*storePath{pg, pb} {
		f.mustGet(http.MethodGet, p.narinfoPath())
		resp, b := f.mustGet(http.MethodGet, p.narPath())
		if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
			t.Fatalf("%s: %d, %d bytes", p.ni.StorePath, resp.StatusCode, len(b))
		}
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "ipfs")
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "upstream", "reason", ReasonBlockMismatch)
}
