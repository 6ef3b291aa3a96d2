package publisher

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// fakeMFS is an in-memory MFS: files by path (a link is "cid:<cid>").
// TestMFSOps (package ipfs) runs the real calls against kubo.
type fakeMFS struct {
	mu    sync.Mutex
	files map[string]string
}

func (f *fakeMFS) FilesWrite(_ context.Context, p string, data []byte, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[p] = string(data)
	return nil
}
func (f *fakeMFS) FilesLink(_ context.Context, c cid.Cid, p string, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[p] = "cid:" + c.String()
	return nil
}
func (f *fakeMFS) FilesRm(_ context.Context, p string, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.files, p)
	return nil
}
func (f *fakeMFS) FilesMkdir(context.Context, string) error { return nil }
func (f *fakeMFS) FilesStat(_ context.Context, p string) (cid.Cid, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// The root's "CID" changes with the content.
	var b strings.Builder
	for k, v := range f.files {
		if strings.HasPrefix(k, p) {
			b.WriteString(k + v)
		}
	}
	return cid.V1Builder{Codec: cid.DagProtobuf, MhType: 0x12}.Sum([]byte(b.String()))
}
func (f *fakeMFS) Self(context.Context) (ipfs.Node, error) {
	return ipfs.Node{PeerID: "12D3KooWfake", Addrs: []string{}}, nil
}
func (f *fakeMFS) get(p string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.files[p]
	return v, ok
}

// TestMFSFollowsStream: the directory gets each published path (narinfo
// byte for byte, NAR link), loses what is retired, gets back what is
// published again, and the root is announced.
func TestMFSFollowsStream(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, st, _, p := setup(t)
	ev, err := pub.PublishPath(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	sk, _, _ := signature.GenerateKeypair("test-1", nil)
	other := *ev
	other.StorePath = st.dir + "/1b9p07z77phvv2hf6gm9f28syp39f1ag-other"
	ni := &narinfo.NarInfo{StorePath: other.StorePath, NarHash: other.NarHash, NarSize: uint64(other.NarSize)}
	ni.Sign(sk)
	other.Sigs = ni.Sigs
	retired := &events.Retired{Host: "a", StoreDir: ev.StoreDir, StorePath: ev.StorePath, NarHash: ev.NarHash,
		NarSize: ev.NarSize, CID: ev.CID, Reason: "test"}
	events.Seal(&other)
	events.Seal(retired)
	for _, e := range []struct {
		subj string
		ev   events.Event
	}{{events.SubjectPublished, ev}, {events.SubjectPublished, &other}, {events.SubjectRetired, retired}} {
		if _, err := events.Publish(ctx, js, e.subj, e.ev); err != nil {
			t.Fatal(err)
		}
	}
	node := &fakeMFS{files: map[string]string{}}
	m, err := NewMFSCache(node, "/cache", st.dir, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Follow(ctx, js, events.DefaultStream) }()
	go m.Announce(ctx, js, 10*time.Millisecond)

	hp := func(sp string) string { return "/cache/" + sp[len(st.dir)+1:len(st.dir)+33] + ".narinfo" }
	nar := "/cache/" + ev.NarURL
	testenv.Eventually(t, 20*time.Second, "the retirement applied", func() bool {
		_, ok := node.get(hp(ev.StorePath))
		return !ok && func() bool { _, ok := node.get(hp(other.StorePath)); return ok }()
	})
	want, _ := mirrorcache.NarInfo(&other)
	if got, _ := node.get(hp(other.StorePath)); got != want.String() {
		t.Errorf("narinfo in MFS:\n%s\nwant\n%s", got, want.String())
	}
	if _, ok := node.get(nar); ok {
		t.Errorf("the retired path's NAR link is still there")
	}
	// Published again: back.
	again := *ev
	again.Header.Time = time.Now().UTC()
	if _, err := js.Publish(ctx, events.SubjectPublished, mustEncode(t, &again)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the path published again", func() bool {
		_, ok := node.get(hp(ev.StorePath))
		l, lok := node.get(nar)
		return ok && lok && l == "cid:"+ev.CID
	})
	testenv.Eventually(t, 20*time.Second, "a cache root announced", func() bool {
		return m.LastAnnounced().Defined()
	})
	cancel()
	<-done
}

func mustEncode(t *testing.T, e events.Event) []byte {
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
