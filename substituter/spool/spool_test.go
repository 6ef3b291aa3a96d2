package spool

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"go.uber.org/goleak"
)

// Every read and timer a Spool starts must have ended once it is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fetcher is a Fetch whose reads end when the test says.
type fetcher struct {
	t       *testing.T
	mu      sync.Mutex
	started map[string]int
	release chan struct{} // nil: reads end at once
	fail    error
}

func (f *fetcher) fetch(ctx context.Context, e *Entry[string]) (*os.File, error) {
	f.mu.Lock()
	f.started[e.NAR.Key]++
	release, fail := f.release, f.fail
	f.mu.Unlock()
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	file, err := os.CreateTemp(f.t.TempDir(), "nar-*.spool")
	if err != nil {
		return nil, err
	}
	os.Remove(file.Name())
	e.Progress.Started(file)
	return file, nil
}

func (f *fetcher) reads(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started[key]
}

func nar(t *testing.T, name string, size uint64) NAR {
	t.Helper()
	mh, err := multihash.Sum([]byte(name), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return NAR{Key: "/nar/" + name + ".nar", StorePath: "/nix/store/" + name, Base: name,
		CID: cid.NewCidV1(cid.Raw, mh), NarHash: []byte(name), NarSize: size}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newSpool(t *testing.T, mod func(*Options[string])) (*Spool[string], *fetcher, *clock) {
	f := &fetcher{t: t, started: map[string]int{}}
	c := &clock{now: time.Now()}
	o := Options[string]{PrefetchAhead: 4, PrefetchMaxBytes: 1 << 30, PrefetchTTL: time.Hour,
		KeepBytes: 1 << 30, KeepTTL: time.Hour, Fetch: f.fetch, Now: c.Now}
	if mod != nil {
		mod(&o)
	}
	p := New(o)
	t.Cleanup(func() { p.Close() })
	return p, f, c
}

func stateOf(p *Spool[string], e *Entry[string]) entryState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return e.state
}

// TestLife walks an entry through its states: wanted while held, kept
// once read and let go, wanted again from the kept file, closed when its
// time is up; its budget follows.
func TestLife(t *testing.T) {
	p, f, c := newSpool(t, func(o *Options[string]) { o.MaxBytes = 1000 })
	n := nar(t, "a", 600)
	e, ok := p.Acquire(n, "ref")
	if !ok || e.Ref != "ref" {
		t.Fatalf("Acquire: %v %v", e, ok)
	}
	<-e.Done()
	if e.Err != nil || stateOf(p, e) != wanted || p.Used() != 600 {
		t.Fatalf("read: err %v, state %v, used %d", e.Err, stateOf(p, e), p.Used())
	}
	if _, ok := p.Acquire(nar(t, "b", 600), "b"); ok {
		t.Fatal("a second NAR fitted beside a held one")
	}
	p.Release(e)
	if stateOf(p, e) != kept || !slices.Equal(p.Kept(), []string{n.Key}) {
		t.Fatalf("after release: %v, kept %v", stateOf(p, e), p.Kept())
	}
	if e2, ok := p.Acquire(n, "ref"); !ok || e2 != e || f.reads(n.Key) != 1 {
		t.Fatalf("kept hit: %v %v, %d reads", e2 == e, ok, f.reads(n.Key))
	}
	p.Release(e)
	c.add(2 * time.Hour)
	p.Sweep()
	if stateOf(p, e) != closed || p.Len() != 0 || p.Used() != 0 {
		t.Fatalf("after KeepTTL: %v, %d entries, used %d", stateOf(p, e), p.Len(), p.Used())
	}
	// A kept NAR gives way to one requested now.
	e, _ = p.Acquire(n, "ref")
	<-e.Done()
	p.Release(e)
	b, ok := p.Acquire(nar(t, "b", 600), "b")
	if !ok || stateOf(p, e) != closed {
		t.Fatalf("b refused (%v) or a still %v", ok, stateOf(p, e))
	}
	<-b.Done()
	p.Release(b)
}

// TestAbandoned: a read every request walked away from is cancelled, and
// the next request starts another.
func TestAbandoned(t *testing.T) {
	p, f, _ := newSpool(t, nil)
	f.release = make(chan struct{})
	n := nar(t, "a", 10)
	e, _ := p.Acquire(n, "")
	p.Release(e)
	<-e.Done()
	if !errors.Is(e.Err, context.Canceled) {
		t.Fatalf("abandoned read ended with %v", e.Err)
	}
	waitState(t, p, e, closed)
	close(f.release)
	e2, _ := p.Acquire(n, "")
	<-e2.Done()
	p.Release(e2)
	if e2 == e || f.reads(n.Key) != 2 || e2.Err != nil {
		t.Fatalf("after an abandoned read: same entry %v, %d reads, %v", e2 == e, f.reads(n.Key), e2.Err)
	}
}

// TestAhead: a NAR read ahead is used by its request, or dropped once it
// waited PrefetchTTL; one replaced by another narinfo's NAR for the same
// path is closed, its budget released.
func TestAhead(t *testing.T) {
	p, f, c := newSpool(t, func(o *Options[string]) { o.MaxBytes = 1 << 20 })
	a, b := nar(t, "a", 10), nar(t, "b", 20)
	p.Prefetch(a, "a")
	p.Prefetch(b, "b")
	waitFor(t, "both read", func() bool {
		ea, eb := p.Entry(a.Key), p.Entry(b.Key)
		return ea != nil && eb != nil && ea.IsDone() && eb.IsDone()
	})
	ea, _ := p.Acquire(a, "a")
	if f.reads(a.Key) != 1 || stateOf(p, ea) != wanted {
		t.Fatalf("prefetched a: %d reads, %v", f.reads(a.Key), stateOf(p, ea))
	}
	p.Release(ea)
	c.add(2 * time.Hour)
	p.Sweep()
	if p.Entry(b.Key) != nil {
		t.Fatal("b, never requested, outlived PrefetchTTL")
	}
	c2 := nar(t, "c", 30)
	p.Prefetch(c2, "c")
	waitFor(t, "c read", func() bool { e := p.Entry(c2.Key); return e != nil && e.IsDone() })
	old := p.Entry(c2.Key)
	other := c2
	other.CID, other.NarHash = a.CID, []byte("other")
	e, _ := p.Acquire(other, "other")
	<-e.Done()
	if stateOf(p, old) != closed {
		t.Fatalf("replaced read-ahead entry is %v", stateOf(p, old))
	}
	p.Release(e)
	if used := p.Used(); used != int64(other.NarSize) {
		t.Fatalf("used %d, want %d (the kept replacement only)", used, other.NarSize)
	}
}

// TestCloseWaits: Close cancels a read under way and waits for it, stops
// the expiry timers, and starts no read after.
func TestCloseWaits(t *testing.T) {
	p, f, _ := newSpool(t, nil)
	f.release = make(chan struct{})
	e, _ := p.Acquire(nar(t, "a", 10), "")
	p.Prefetch(nar(t, "b", 10), "")
	p.Close()
	if !e.IsDone() || !errors.Is(e.Err, context.Canceled) {
		t.Fatalf("Close returned before the read ended: done %v, %v", e.IsDone(), e.Err)
	}
	if stateOf(p, e) != wanted || p.Len() != 1 {
		t.Fatalf("held entry %v, %d entries, after Close", stateOf(p, e), p.Len())
	}
	p.Release(e)
	if stateOf(p, e) != closed || p.Used() != 0 {
		t.Fatalf("held entry %v, used %d, once let go", stateOf(p, e), p.Used())
	}
	if _, ok := p.Acquire(nar(t, "c", 10), ""); ok {
		t.Fatal("a read started after Close")
	}
	close(f.release)
}

func waitState(t *testing.T, p *Spool[string], e *Entry[string], st entryState) {
	t.Helper()
	waitFor(t, "state "+st.String(), func() bool { return stateOf(p, e) == st })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
