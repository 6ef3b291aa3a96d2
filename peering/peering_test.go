package peering

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
	"github.com/nix-ipfs/nix-ipfs/upstream"
)

const (
	peerSelf = "12D3KooWCMpDvrSw6GVYQ85Pk12ztqRM247pZddW6c8VQz36xAff"
	peerB    = "12D3KooWJyLvsygSJX92sA6Jiu6vgH3ddDPvCi73KDnNkh5yc6Rf"
	peerM    = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
)

// fakePeering records what kubo would have been told.
type fakePeering struct {
	mu      sync.Mutex
	down    bool
	peering map[string][]string // peer ID -> addresses
	removed []string
	dialled []string
	lastAdd []string
	rounds  int
	conns   []ipfs.Node
	gone    []string // disconnected
	wants   map[string]int
}

func (f *fakePeering) Conns(context.Context) ([]ipfs.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.conns), nil
}

func (f *fakePeering) Wants(_ context.Context, id string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wants[id], nil
}

func (f *fakePeering) Disconnect(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gone = append(f.gone, id)
	return nil
}

func (f *fakePeering) Self(context.Context) (ipfs.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return ipfs.Node{}, errors.New("connection refused")
	}
	return ipfs.Node{PeerID: peerSelf}, nil
}

func (f *fakePeering) PeeringAdd(_ context.Context, addrs []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rounds++
	f.lastAdd = slices.Clone(addrs)
	for _, a := range addrs {
		i := strings.LastIndex(a, "/p2p/")
		id := a[i+len("/p2p/"):]
		if !slices.Contains(f.peering[id], a[:i]) {
			f.peering[id] = append(f.peering[id], a[:i])
		}
	}
	return nil
}

func (f *fakePeering) Connect(_ context.Context, n ipfs.Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dialled = append(f.dialled, n.PeerID)
	return nil
}

func (f *fakePeering) PeeringRemove(_ context.Context, ids ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.peering, id)
		f.removed = append(f.removed, id)
	}
	return nil
}

func (f *fakePeering) snapshot() (map[string][]string, []string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string][]string{}
	for k, v := range f.peering {
		m[k] = slices.Clone(v)
	}
	return m, slices.Clone(f.removed), f.rounds
}

// listServer serves a cache whose mirror list the test changes.
type listServer struct {
	mu   sync.Mutex
	body []byte
	code int
}

func (l *listServer) set(code int, body []byte) {
	l.mu.Lock()
	l.code, l.body = code, body
	l.mu.Unlock()
}

func (l *listServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/"+mirrorlist.FileName {
		http.NotFound(w, r)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	w.WriteHeader(l.code)
	w.Write(l.body)
}

func listJSON(t *testing.T, ms ...mirrorlist.Mirror) []byte {
	t.Helper()
	b, err := (&mirrorlist.List{Type: mirrorlist.Type, Mirrors: ms}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newPeerer peers for the cache at url, reading its list within
// upstreamTimeout (zero: the substituter's default, 30 s).
func newPeerer(t *testing.T, url string, o Options, log *zap.Logger, upstreamTimeout time.Duration) *Peerer {
	t.Helper()
	if upstreamTimeout == 0 {
		upstreamTimeout = 30 * time.Second
	}
	up, err := upstream.New(upstream.Options{URLs: []string{url}, Timeout: upstreamTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	return New(o, up, log, nil, upstreamTimeout)
}

func waitPeering(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestPeeringFollowsTheList: the substituter peers its kubo with the
// listed mirrors and the ones given by hand before StartPeering returns,
// follows the list as mirrors come and go, keeps hand-given peers, and
// lives through a list that is hostile, missing or too large.
func TestPeeringFollowsTheList(t *testing.T) {
	ls := &listServer{}
	up := httptest.NewServer(ls)
	defer up.Close()
	ls.set(200, listJSON(t,
		mirrorlist.Mirror{Name: "b", PeerID: peerB, Addrs: []string{"/ip4/127.0.0.1/tcp/4001", "/unix/tmp/x"}},
		mirrorlist.Mirror{Name: "self", PeerID: peerSelf, Addrs: []string{"/ip4/127.0.0.1/tcp/4002"}},
	))
	kubo := &fakePeering{peering: map[string][]string{}}
	var mc Config
	mc.Peers = config.Strings{"/ip4/10.9.9.9/tcp/4001/p2p/" + peerM}
	mc.Refresh, mc.Max, mc.Private = 20*time.Millisecond, 16, "auto"
	if err := mc.Validate(false); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	srv := newPeerer(t, up.URL, mc.Options(kubo), zap.New(core), 0)
	ctx, cancel := context.WithCancel(context.Background())
	wait := srv.Start(ctx)
	defer func() { cancel(); wait() }()

	got, _, _ := kubo.snapshot()
	// The upstream is on loopback, so the mirror's loopback address is
	// taken; the unix socket and the client's own node are not.
	if len(got) != 2 || !slices.Equal(got[peerB], []string{"/ip4/127.0.0.1/tcp/4001"}) || !slices.Equal(got[peerM], []string{"/ip4/10.9.9.9/tcp/4001"}) {
		t.Fatalf("peered with %v before StartPeering returned", got)
	}
	kubo.mu.Lock()
	dialled := slices.Clone(kubo.dialled)
	kubo.mu.Unlock()
	if !slices.Contains(dialled, peerB) || !slices.Contains(dialled, peerM) || slices.Contains(dialled, peerSelf) {
		t.Errorf("dialled %v at once, want b and m, not self", dialled)
	}
	if n := logs.FilterMessage("mirror list: entries or addresses refused").Len(); n == 0 {
		t.Error("the refused unix address was not logged")
	}

	// b leaves the list: it is dropped, the hand-given peer stays.
	ls.set(200, listJSON(t))
	waitPeering(t, "b dropped", func() bool { got, _, _ := kubo.snapshot(); _, ok := got[peerB]; return !ok })
	got, removed, _ := kubo.snapshot()
	if _, ok := got[peerM]; !ok || slices.Contains(removed, peerM) {
		t.Errorf("hand-given peer dropped: %v removed %v", got, removed)
	}

	// b comes back; then hostile lists: too large, garbage, thousands of
	// entries, a server error, none at all. None stops the loop or drops
	// the hand-given peer, and only a list read whole changes the listed
	// ones: a failing or missing list keeps b.
	ls.set(200, listJSON(t, mirrorlist.Mirror{Name: "b", PeerID: peerB, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}))
	waitPeering(t, "b back", func() bool { got, _, _ := kubo.snapshot(); _, ok := got[peerB]; return ok })
	var many []mirrorlist.Mirror
	for i := 0; i < 3000; i++ { // under 1 MiB, so it is read and trimmed
		many = append(many, mirrorlist.Mirror{Name: fmt.Sprint("m", i), PeerID: peerB, Addrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 1000+i)}})
	}
	for _, bad := range []struct {
		code    int
		body    []byte
		trimmed bool // read, and cut to the bounds
	}{
		{200, []byte(`{"type":"nixipfs.mirrors.v1","pad":"` + strings.Repeat("x", mirrorlist.MaxSize) + `"}`), false},
		{200, []byte("\x00\xff garbage"), false},
		{200, listJSON(t, many...), true},
		{500, []byte("oops"), false},
		{404, nil, false},
	} {
		ls.set(bad.code, bad.body)
		_, _, r0 := kubo.snapshot()
		waitPeering(t, "two more rounds", func() bool { _, _, r := kubo.snapshot(); return r >= r0+2 })
		got, _, _ := kubo.snapshot()
		if _, ok := got[peerM]; !ok {
			t.Errorf("after a %d list of %d bytes: hand-given peer gone", bad.code, len(bad.body))
		}
		if _, ok := got[peerB]; !ok {
			t.Errorf("after a %d list of %d bytes: b, from the last good list, dropped", bad.code, len(bad.body))
		}
		kubo.mu.Lock()
		n := 0
		for _, a := range kubo.lastAdd {
			if strings.HasSuffix(a, "/p2p/"+peerB) {
				n++
			}
		}
		kubo.mu.Unlock()
		if n > mirrorlist.DefaultMaxAddrs || (bad.trimmed && n != mirrorlist.DefaultMaxAddrs) {
			t.Errorf("a list of %d bytes got %d addresses of one peer into kubo (cap %d)", len(bad.body), n, mirrorlist.DefaultMaxAddrs)
		}
	}
	if logs.FilterMessage("mirror list refused").Len() == 0 {
		t.Error("refused lists were not logged")
	}
	if len(srv.Peers()) == 0 {
		t.Error("MirrorPeers is empty")
	}
}

// TestPeeringWaitsForKubo: a kubo that does not answer fails the round
// without failing the substituter, and a later round peers.
func TestPeeringWaitsForKubo(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	os.WriteFile(filepath.Join(dir, mirrorlist.FileName), listJSON(t,
		mirrorlist.Mirror{Name: "b", PeerID: peerB, Addrs: []string{"/ip4/192.168.7.7/tcp/4001"}}), 0o644)
	kubo := &fakePeering{peering: map[string][]string{}, down: true}
	srv := newPeerer(t, "file://"+dir, Options{Kubo: kubo, Refresh: time.Hour}, nil, 0)
	if srv.round(context.Background()) {
		t.Fatal("a round with kubo down reported success")
	}
	kubo.mu.Lock()
	kubo.down = false
	kubo.mu.Unlock()
	srv.opts.Private = PrivateAuto
	if !srv.round(context.Background()) {
		t.Fatal("round failed with kubo up")
	}
	// A file:// upstream is this host's: a private address is taken.
	if got, _, _ := kubo.snapshot(); len(got[peerB]) != 1 {
		t.Errorf("peered with %v", got)
	}
}

func TestMirrorConfigValidate(t *testing.T) {
	ok := Config{Max: 4, Private: "deny", Peers: config.Strings{"/dns4/b.example.org/tcp/4001/p2p/" + peerB}}
	if err := ok.Validate(false); err != nil || len(ok.manual) != 1 {
		t.Errorf("%v %+v", err, ok.manual)
	}
	for name, c := range map[string]Config{
		"no /p2p/":      {Max: 4, Private: "auto", Peers: config.Strings{"/ip4/1.2.3.4/tcp/4001"}},
		"bad private":   {Max: 4, Private: "maybe"},
		"negative max":  {Max: -1, Private: "auto"},
		"with gateway":  {Max: 4, Private: "auto", Peers: config.Strings{"/ip4/1.2.3.4/tcp/4001/p2p/" + peerB}},
		"odd transport": {Max: 4, Private: "auto", Peers: config.Strings{"/unix/x/p2p/" + peerB}},
	} {
		if err := c.Validate(name == "with gateway"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPeeringDoesNotWaitForAHungUpstream: StartPeering returns after its
// bound when the upstream never answers, and the loop ends with ctx.
func TestPeeringDoesNotWaitForAHungUpstream(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	old := peeringFirstWait
	peeringFirstWait = 200 * time.Millisecond
	defer func() { peeringFirstWait = old }()
	kubo := &fakePeering{peering: map[string][]string{}}
	srv := newPeerer(t, up.URL, Options{Kubo: kubo, Refresh: time.Hour}, nil, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	wait := srv.Start(ctx)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("StartPeering waited %v for a hung upstream", d)
	}
	cancel()
	wait()
}
