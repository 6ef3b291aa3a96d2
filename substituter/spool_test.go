package substituter

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"path"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// entryDone reports whether the spool entry of a NAR exists and is done.
func (f *fixture) entryDone(p *storePath) bool {
	e := f.srv.spools.Entry(p.narPath())
	return e != nil && e.IsDone()
}

// gate is a reader that blocks until opened, then reads r.
type gate struct {
	open chan struct{}
	r    io.Reader
}

func (g *gate) Read(b []byte) (int, error) {
	<-g.open
	return g.r.Read(b)
}

// halfGated serves b's first half at once and the rest once release is
// closed.
func halfGated(b []byte, release chan struct{}) io.ReadCloser {
	return io.NopCloser(io.MultiReader(bytes.NewReader(b[:len(b)/2]), &gate{open: release, r: bytes.NewReader(b[len(b)/2:])}))
}

// getFollowing GETs path while IPFS holds back the second half of its
// NAR (halfGated on release): the response and its first 1000 bytes must
// come first (a generous bound turns "they never do" into a failure, not a
// hang), then release is closed and the rest read.
func (f *fixture) getFollowing(path string, release chan struct{}) (*http.Response, []byte, error) {
	f.t.Helper()
	type started struct {
		resp *http.Response
		head []byte
		err  error
	}
	got := make(chan started, 1)
	go func() {
		resp, err := http.Get(f.http.URL + path)
		if err != nil {
			got <- started{err: err}
			return
		}
		head := make([]byte, 1000)
		_, err = io.ReadFull(resp.Body, head)
		got <- started{resp, head, err}
	}()
	var st started
	select {
	case st = <-got:
	case <-time.After(time.Minute):
		close(release)
		f.t.Fatal("no response while IPFS held back the rest of the NAR: not followed")
	}
	close(release)
	if st.err != nil {
		return st.resp, nil, st.err
	}
	defer st.resp.Body.Close()
	rest, err := io.ReadAll(st.resp.Body)
	return st.resp, append(st.head, rest...), err
}

// waitDropped waits until no spool entry is left for path: the handler of
// a request already answered may not have given its entry back yet, and
// the next request would be served from it.
func (f *fixture) waitDropped(path string) {
	f.t.Helper()
	waitFor(f.t, path+" dropped from the spool", func() bool {
		return f.srv.spools.Entry(path) == nil
	})
}

// failAfter reads r, then fails instead of ending.
type failAfter struct{ r io.Reader }

func (f failAfter) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if err == io.EOF {
		return n, errors.New("fake ipfs: connection reset")
	}
	return n, err
}

// TestPrefetchOnNarinfo: serving a narinfo starts reading its NAR from IPFS;
// the NAR request then finds it read and checked, and IPFS is read once.
func TestPrefetchOnNarinfo(t *testing.T) {
	// Nothing kept after the request (TestKeptNar), so the file goes.
	f := newFixture(t, func(o *Options) { o.KeepBytes = -1 })
	f.ipfs.catted = make(chan cid.Cid, 8)
	p := f.addPath("prefetched", payload("prefetched", 700000), nil)
	f.mustGet(http.MethodGet, p.narinfoPath())
	select {
	case c := <-f.ipfs.catted:
		if c != p.cid {
			t.Fatalf("prefetch read %s, want %s", c, p.cid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serving the narinfo started no IPFS read")
	}
	waitFor(t, "the prefetch", func() bool { return f.entryDone(p) })
	resp, b := f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("NAR: %d, %d bytes", resp.StatusCode, len(b))
	}
	if n := f.ipfs.calls(); n != 1 {
		t.Errorf("IPFS read %d times, want 1", n)
	}
	if n := f.hitsOf(p.narPath()); n != 0 {
		t.Errorf("upstream NAR fetched %d times", n)
	}
	f.waitMetric(1, "nixipfs_substituter_prefetches_total", "outcome", "used")
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "ipfs")
	// HEAD of a narinfo prefetches nothing more; the file is gone once sent.
	waitFor(t, "the spool entry to be dropped", func() bool {
		return f.srv.spools.Len() == 0
	})
}

// TestPrefetchWrongCID: a prefetched CID that holds other bytes is found
// out before the request, which then gets upstream's NAR, as it would
// without prefetch.
func TestPrefetchWrongCID(t *testing.T) {
	f := newFixture(t, nil)
	nar := payload("wrong", 300000)
	bad := bytes.Clone(nar)
	bad[1] ^= 1
	f.ipfs.put(rawCID(bad), bad)
	p := f.addPath("wrong", nar, func(ni *narinfo.NarInfo) { ni.IPFSHash = rawCID(bad).String() })
	f.mustGet(http.MethodGet, p.narinfoPath())
	waitFor(t, "the prefetch", func() bool { return f.entryDone(p) })
	resp, b := f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, nar) {
		t.Fatalf("NAR: %d, %d bytes, want upstream's %d", resp.StatusCode, len(b), len(nar))
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", "upstream", "reason", ReasonHashMismatch)
	// Not remembered as verified: the next request reads and checks again.
	f.mustGet(http.MethodGet, p.narPath())
	if n := f.ipfs.calls(); n != 2 {
		t.Errorf("IPFS read %d times, want 2", n)
	}
}

// TestPrefetchOrder: with one NAR read ahead at a time, the next one is the
// one Nix will ask for first: of the paths whose references are not
// waiting themselves, the first in store path order.
func TestPrefetchOrder(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PrefetchAhead = 1 })
	release := make(chan struct{})
	f.ipfs.catted = make(chan cid.Cid, 16)
	f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
		if call == 1 {
			return io.NopCloser(&gate{open: release, r: bytes.NewReader(b)}), nil
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	first := f.addPath("first", payload("first", 1000), nil)
	// Two leaves and a path referring to both, named so that the
	// referrer sorts first: the order of store paths alone would pick it.
	var top, a, b *storePath
	for i := 0; ; i++ {
		x := f.addPath(string(rune('a'+i%26))+"-leaf-a", payload("a", 1000+i), nil)
		y := f.addPath(string(rune('a'+i%26))+"-leaf-b", payload("b", 1000+i), nil)
		z := f.addPath(string(rune('a'+i%26))+"-top", payload("t", 1000+i), func(ni *narinfo.NarInfo) {
			ni.References = []string{path.Base(x.ni.StorePath), path.Base(y.ni.StorePath)}
		})
		if z.ni.StorePath < x.ni.StorePath && z.ni.StorePath < y.ni.StorePath {
			top, a, b = z, x, y
			break
		}
		if i > 200 {
			t.Fatal("no names with the wanted order")
		}
	}
	f.mustGet(http.MethodGet, first.narinfoPath())
	if c := <-f.ipfs.catted; c != first.cid {
		t.Fatalf("first read %s", c)
	}
	for _, p := range []*storePath{top, a, b} {
		f.mustGet(http.MethodGet, p.narinfoPath())
	}
	close(release)
	// Its request frees the one place ahead.
	if resp, body := f.mustGet(http.MethodGet, first.narPath()); resp.StatusCode != 200 || !bytes.Equal(body, first.nar) {
		t.Fatalf("NAR %s: %d", first.ni.StorePath, resp.StatusCode)
	}
	want := a
	if b.ni.StorePath < a.ni.StorePath {
		want = b
	}
	select {
	case c := <-f.ipfs.catted:
		if c != want.cid {
			t.Errorf("second read %s, want the leaf %s (top is %s)", c, want.cid, top.cid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no second prefetch once the first was requested")
	}
	// Still one ahead at a time: nothing else starts until a request.
	time.Sleep(50 * time.Millisecond)
	if n := f.ipfs.calls(); n != 2 {
		t.Errorf("%d IPFS reads with one NAR allowed ahead", n)
	}
	for _, p := range []*storePath{a, b, top} {
		if resp, body := f.mustGet(http.MethodGet, p.narPath()); resp.StatusCode != 200 || !bytes.Equal(body, p.nar) {
			t.Fatalf("NAR %s: %d", p.ni.StorePath, resp.StatusCode)
		}
	}
	f.waitMetric(4, "nixipfs_substituter_nars_total", "source", "ipfs")
}

// TestPrefetchUnrequestedDropped: a NAR read ahead whose request never
// comes is dropped after PrefetchTTL, and its spool budget returned.
func TestPrefetchUnrequestedDropped(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PrefetchTTL = 20 * time.Millisecond; o.MaxSpoolBytes = 1 << 20 })
	p := f.addPath("unrequested", payload("unrequested", 500000), nil)
	f.mustGet(http.MethodGet, p.narinfoPath())
	f.waitMetric(1, "nixipfs_substituter_prefetches_total", "outcome", "unrequested")
	waitFor(t, "the spool budget to be returned", func() bool {
		return f.srv.spools.Used() == 0
	})
	resp, b := f.mustGet(http.MethodGet, p.narPath())
	if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("NAR: %d", resp.StatusCode)
	}
}

// TestSharedFetch: requests for the same NAR at once share one IPFS read.
func TestSharedFetch(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PrefetchAhead = -1 })
	release := make(chan struct{})
	f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
		return io.NopCloser(&gate{open: release, r: bytes.NewReader(b)}), nil
	}
	p := f.addPath("shared", payload("shared", 400000), nil)
	f.mustGet(http.MethodGet, p.narinfoPath())
	var wg sync.WaitGroup
	bodies := make([][]byte, 3)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, bodies[i], _ = f.get(http.MethodGet, p.narPath())
		}()
	}
	waitFor(t, "three requests on one entry", func() bool {
		return f.srv.spools.Holders(p.narPath()) == 3
	})
	close(release)
	wg.Wait()
	for i, b := range bodies {
		if !bytes.Equal(b, p.nar) {
			t.Errorf("request %d: %d bytes", i, len(b))
		}
	}
	if n := f.ipfs.calls(); n != 1 {
		t.Errorf("IPFS read %d times, want 1", n)
	}
}

// TestStreamVerified: a CID already proved to hold its NAR streams: the
// response starts before IPFS has delivered the whole NAR.
func TestStreamVerified(t *testing.T) {
	// Nothing kept after the first request, which would answer the second.
	f := newFixture(t, func(o *Options) { o.KeepBytes = -1 })
	release := make(chan struct{})
	f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
		if call == 2 {
			return halfGated(b, release), nil
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	p := f.addPath("streamed", payload("streamed", 1<<20), nil)
	f.mustGet(http.MethodGet, p.narinfoPath())
	if resp, b := f.mustGet(http.MethodGet, p.narPath()); resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("first NAR: %d", resp.StatusCode)
	}
	f.waitDropped(p.narPath())
	// IPFS holds back the second half: headers and the first bytes come
	// anyway.
	resp, b, err := f.getFollowing(p.narPath(), release)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(p.nar)) || !bytes.Equal(b, p.nar) {
		t.Fatalf("streamed NAR: %v, %d bytes, %v", resp, len(b), err)
	}
	if n := f.hitsOf(p.narPath()); n != 0 {
		t.Errorf("upstream NAR fetched %d times", n)
	}
}

// TestStreamResumesUpstream: when IPFS fails in the middle of a streamed
// NAR, the rest comes from upstream and the client gets the whole NAR.
func TestStreamResumesUpstream(t *testing.T) {
	for _, rangeOK := range []bool{true, false} {
		t.Run(map[bool]string{true: "range", false: "no range"}[rangeOK], func(t *testing.T) {
			f := newFixture(t, func(o *Options) { o.KeepBytes = -1 })
			f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
				if call == 2 {
					return io.NopCloser(failAfter{bytes.NewReader(b[:300001])}), nil
				}
				return io.NopCloser(bytes.NewReader(b)), nil
			}
			p := f.addPath("resumed", payload("resumed", 900000), nil)
			var ranges []string
			f.override[p.narPath()] = func(w http.ResponseWriter, r *http.Request) {
				ranges = append(ranges, r.Header.Get("Range"))
				if !rangeOK {
					r.Header.Del("Range")
				}
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(p.nar))
			}
			f.mustGet(http.MethodGet, p.narinfoPath())
			f.mustGet(http.MethodGet, p.narPath())
			resp, b := f.mustGet(http.MethodGet, p.narPath())
			if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
				t.Fatalf("NAR: %d, %d bytes", resp.StatusCode, len(b))
			}
			if len(ranges) != 1 || ranges[0] != "bytes=300001-" {
				t.Errorf("upstream asked for %q", ranges)
			}
			f.waitMetric(1, "nixipfs_substituter_ipfs_failures_total", "reason", ReasonIPFSError)
		})
	}
}

// TestStreamDamagedCut: a remembered CID whose bytes come back different
// (a damaged block store) never yields a complete response, and is
// forgotten: the next request is read and checked again. Found out before
// a byte is sent (the read ended before the request), the request gets the
// upstream NAR instead.
func TestStreamDamagedCut(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run(map[bool]string{false: "while sending", true: "before sending"}[early], func(t *testing.T) {
			f := newFixture(t, func(o *Options) { o.KeepBytes = -1 })
			release := make(chan struct{})
			f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
				if call == 2 {
					bad := bytes.Clone(b)
					bad[len(bad)-10] ^= 1
					if early {
						return io.NopCloser(bytes.NewReader(bad)), nil
					}
					return halfGated(bad, release), nil
				}
				return io.NopCloser(bytes.NewReader(b)), nil
			}
			p := f.addPath("damaged", payload("damaged", 500000), nil)
			f.mustGet(http.MethodGet, p.narinfoPath())
			f.mustGet(http.MethodGet, p.narPath())
			f.waitDropped(p.narPath())
			if early {
				// The narinfo reads it ahead, damaged, and the read ends
				// before the request comes.
				f.mustGet(http.MethodGet, p.narinfoPath())
				waitFor(t, "the damaged read ended", func() bool {
					e := f.srv.spools.Entry(p.narPath())
					return f.ipfs.calls() == 2 && e != nil && e.IsDone()
				})
				resp, b := f.mustGet(http.MethodGet, p.narPath())
				if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
					t.Fatalf("NAR after a damaged read: %d, %d bytes", resp.StatusCode, len(b))
				}
				f.waitMetric(1, "nixipfs_substituter_nars_total", "source", SourceUpstream, "reason", ReasonHashMismatch)
				return
			}
			resp, b, err := f.getFollowing(p.narPath(), release)
			if err == nil && resp.StatusCode == 200 && len(b) == len(p.nar) {
				t.Fatalf("damaged NAR sent whole (%d bytes)", len(b))
			}
			if bytes.Equal(b, p.nar) {
				t.Fatal("got the right NAR from damaged blocks?")
			}
			resp, b = f.mustGet(http.MethodGet, p.narPath())
			if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
				t.Fatalf("after the cut: %d, %d bytes", resp.StatusCode, len(b))
			}
			if n := f.ipfs.calls(); n != 3 {
				t.Errorf("IPFS read %d times, want 3", n)
			}
		})
	}
}

// TestKeptNar: a NAR verified for one request is kept in the spool, and
// the next request for it is sent from there with no read from IPFS;
// kept NARs stay within KeepBytes (oldest dropped first; the last is
// kept whatever its size) and KeepTTL.
func TestKeptNar(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.PrefetchAhead = -1
		o.KeepBytes = 1000000 // one of the NARs below, not two
	})
	now := time.Now()
	var mu sync.Mutex
	f.srv.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := f.addPath("kept-a", payload("kept-a", 600000), nil)
	b := f.addPath("kept-b", payload("kept-b", 600000), nil)
	get := func(p *storePath) {
		t.Helper()
		f.mustGet(http.MethodGet, p.narinfoPath())
		if resp, body := f.mustGet(http.MethodGet, p.narPath()); resp.StatusCode != 200 || !bytes.Equal(body, p.nar) {
			t.Fatalf("%s: %d, %d bytes", p.narPath(), resp.StatusCode, len(body))
		}
	}
	kept := func() int {
		return len(f.srv.spools.Kept())
	}
	get(a)
	waitFor(t, "a kept", func() bool { return kept() == 1 })
	get(a)
	if n := f.ipfs.calls(); n != 1 {
		t.Fatalf("IPFS read %d times for two requests of a kept NAR, want 1", n)
	}
	f.waitMetric(1, "nixipfs_substituter_kept_nar_hits_total")
	f.waitMetric(2, "nixipfs_substituter_nars_total", "source", "ipfs")

	// b does not fit beside a: a goes (and, proved before, streams).
	get(b)
	waitFor(t, "b kept in a's place", func() bool {
		return slices.Equal(f.srv.spools.Kept(), []string{b.narPath()})
	})
	get(a)
	if n := f.ipfs.calls(); n != 3 {
		t.Fatalf("IPFS read %d times, want 3 (a again, after b took its place)", n)
	}

	// After KeepTTL, b is read again.
	mu.Lock()
	now = now.Add(DefaultKeepTTL + time.Second)
	mu.Unlock()
	get(b)
	if n := f.ipfs.calls(); n != 4 {
		t.Fatalf("IPFS read %d times, want 4 (b again, after KeepTTL)", n)
	}
	if f.hitsOf(a.narPath())+f.hitsOf(b.narPath()) != 0 {
		t.Error("a NAR came from upstream")
	}

	// A NAR larger than KeepBytes is kept, alone.
	c := f.addPath("kept-c", payload("kept-c", 1200000), nil)
	get(c)
	waitFor(t, "c kept alone", func() bool {
		return slices.Equal(f.srv.spools.Kept(), []string{c.narPath()})
	})
}

// TestKeptNarGivesWay: a kept NAR leaves the spool budget to a NAR
// requested now, which is then read from IPFS rather than refused.
func TestKeptNarGivesWay(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.PrefetchAhead = -1
		o.MaxSpoolBytes = 1000000 // one of the NARs below, not two
	})
	a := f.addPath("budget-a", payload("budget-a", 600000), nil)
	b := f.addPath("budget-b", payload("budget-b", 600000), nil)
	for _, p := range []*storePath{a, b} {
		f.mustGet(http.MethodGet, p.narinfoPath())
		if resp, body := f.mustGet(http.MethodGet, p.narPath()); resp.StatusCode != 200 || !bytes.Equal(body, p.nar) {
			t.Fatalf("%s: %d, %d bytes", p.narPath(), resp.StatusCode, len(body))
		}
		waitFor(t, p.narPath()+" kept", func() bool {
			return slices.Equal(f.srv.spools.Kept(), []string{p.narPath()})
		})
	}
	f.waitMetric(2, "nixipfs_substituter_nars_total", "source", "ipfs")
	if f.hitsOf(b.narPath()) != 0 {
		t.Error("b came from upstream: the kept a did not give way")
	}
}

// TestKeptStreamed: a NAR streamed to a client (its CID proved before) is
// read into the spool as it is sent, and kept once the whole has matched,
// so the request after it reads nothing from IPFS; a read that does not
// match leaves nothing kept.
func TestKeptStreamed(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PrefetchAhead = -1 })
	now := time.Now()
	var mu sync.Mutex
	f.srv.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	damaged := false
	f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
		mu.Lock()
		bad := damaged
		mu.Unlock()
		if bad {
			bad := bytes.Clone(b)
			bad[len(bad)-10] ^= 1
			return io.NopCloser(bytes.NewReader(bad)), nil
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	p := f.addPath("streamed-kept", payload("streamed-kept", 700000), nil)
	kept := func() bool {
		return slices.Equal(f.srv.spools.Kept(), []string{p.narPath()})
	}
	expire := func() {
		mu.Lock()
		now = now.Add(DefaultKeepTTL + time.Second)
		mu.Unlock()
		f.srv.spools.Sweep()
	}
	f.mustGet(http.MethodGet, p.narinfoPath())
	f.mustGet(http.MethodGet, p.narPath()) // read into the spool, proved, kept
	waitFor(t, "kept after the spool read", kept)
	expire()
	if kept() {
		t.Fatal("still kept after KeepTTL")
	}
	// Proved, not in the spool: streams (IPFS read 2), copied on the way.
	if resp, b := f.mustGet(http.MethodGet, p.narPath()); resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("streamed NAR: %d, %d bytes", resp.StatusCode, len(b))
	}
	f.waitMetric(2, "nixipfs_substituter_nars_total", "source", SourceIPFS)
	waitFor(t, "kept after the stream", kept)
	if resp, b := f.mustGet(http.MethodGet, p.narPath()); resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
		t.Fatalf("kept NAR: %d, %d bytes", resp.StatusCode, len(b))
	}
	if n := f.ipfs.calls(); n != 2 {
		t.Fatalf("IPFS read %d times, want 2 (the third request from the kept stream)", n)
	}
	f.waitMetric(1, "nixipfs_substituter_kept_nar_hits_total")

	// A read of damaged blocks is never sent whole (it is cut, or, found
	// out before a byte went, the request gets upstream's NAR), and
	// nothing of it is kept.
	waitFor(t, "kept again after the kept hit", kept) // its handler has let go
	expire()
	f.waitDropped(p.narPath())
	mu.Lock()
	damaged = true
	mu.Unlock()
	if _, b, err := f.get(http.MethodGet, p.narPath()); err == nil && len(b) == len(p.nar) && !bytes.Equal(b, p.nar) {
		t.Fatal("damaged stream delivered whole")
	}
	time.Sleep(100 * time.Millisecond)
	n := len(f.srv.spools.Kept())
	if n != 0 {
		t.Fatalf("%d NARs kept after a damaged stream", n)
	}
}
