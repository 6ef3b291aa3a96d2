package ipfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/nardag"
)

// TestImport: a DAG built in process reaches kubo through DagImport
// (nardag.Import), pinned,
// and reads back byte for byte; for a kubo chunker its CID is the one
// kubo's add gives.
func TestImport(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before, err := k.Client.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(7, 3<<20+11)
	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	copy(data[600000:], hash)
	for _, ch := range []string{"size-262144", "nix-refs-4096-524288"} {
		c, err := nardag.Import(ctx, k.Client, func(put nardag.Sink) (cid.Cid, error) {
			return nardag.Build(ctx, bytes.NewReader(data), ch, []string{hash}, put)
		}, true)
		if err != nil {
			t.Fatalf("%s: Import: %v", ch, err)
		}
		if got := catAll(t, k.Client, ctx, c); !bytes.Equal(got, data) {
			t.Fatalf("%s: cat of %s differs from the input", ch, c)
		}
		if ok, err := k.Client.IsPinned(ctx, c); err != nil || !ok {
			t.Errorf("%s: %s pinned %v (%v)", ch, c, ok, err)
		}
		if ch == "size-262144" {
			if want := cliAdd(t, k, writeFile(t, data), "--cid-version=1"); c != want {
				t.Errorf("Import %s, kubo's add %s", c, want)
			}
		}
	}
	pins, err := k.Client.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != len(before)+2 {
		t.Errorf("pins %v, want the two roots only (not the placeholder)", pins)
	}

	// A failing source keeps its error and kind; nothing is pinned.
	boom := errs.Errorf(errs.Corrupt, "boom")
	_, err = nardag.Import(ctx, k.Client, func(put nardag.Sink) (cid.Cid, error) {
		if err := put(cid.Undef, nil); err != nil {
			return cid.Undef, err
		}
		return cid.Undef, boom
	}, true)
	if !errors.Is(err, boom) || !errs.Is(err, errs.Corrupt) {
		t.Errorf("Import with a failing source: %v", err)
	}

	// kubo's add refuses a chunker it does not have, before sending.
	p := ipfs.DefaultParams()
	p.Chunker = "nix-refs-4096-524288"
	if _, err := k.Client.Add(ctx, bytes.NewReader(data), p, false); !errs.Is(err, errs.Invalid) {
		t.Errorf("Add with %s: %v, want Invalid", p.Chunker, err)
	}
	p.Nocopy = true
	if err := p.Validate(); !errs.Is(err, errs.Config) {
		t.Errorf("nocopy with %s: %v, want Config", p.Chunker, err)
	}
}

// pinSpy is kubo with its PinBlock watched (and, with block, held back
// until released, as kubo's GC lock holds it).
type pinSpy struct {
	*ipfs.Kubo
	mu      sync.Mutex
	calls   int
	pinned  int
	block   chan struct{} // if set, PinBlock waits for it or ctx
	failDag error         // if set, DagImport reads everything, then fails
}

func (s *pinSpy) PinBlock(ctx context.Context, c cid.Cid, data []byte) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := s.Kubo.PinBlock(ctx, c, data)
	if err == nil {
		s.mu.Lock()
		s.pinned++
		s.mu.Unlock()
	}
	return err
}

func (s *pinSpy) DagImport(ctx context.Context, cars []io.Reader, pin bool) (map[cid.Cid]string, error) {
	if s.failDag != nil {
		for _, r := range cars {
			io.Copy(io.Discard, r)
		}
		return nil, s.failDag
	}
	return s.Kubo.DagImport(ctx, cars, pin)
}

// TestImportPinsRootWithoutWalk: nardag.Import pins a many-block DAG's
// root with PinBlock (no walk of the DAG by kubo) while the import holds
// kubo's GC lock, and what it pinned survives a garbage collection whole;
// when PinBlock fails kubo's own pin (with the walk) takes over; when the
// import fails after the root was pinned, the pin is dropped.
func TestImportPinsRootWithoutWalk(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	importData := func(imp nardag.Importer, seed uint64) (cid.Cid, []byte, error) {
		data := randomBytes(seed, 3<<20+11)
		c, err := nardag.Import(ctx, imp, func(put nardag.Sink) (cid.Cid, error) {
			return nardag.Build(ctx, bytes.NewReader(data), "nix-refs-4096-253952", nil, put)
		}, true)
		return c, data, err
	}
	survivesGC := func(what string, c cid.Cid, data []byte) {
		t.Helper()
		if ok, err := k.Client.IsPinned(ctx, c); err != nil || !ok {
			t.Fatalf("%s: %s pinned %v (%v)", what, c, ok, err)
		}
		if err := k.Client.RepoGC(ctx); err != nil {
			t.Fatalf("%s: repo gc: %v", what, err)
		}
		if got := catAll(t, k.Client, ctx, c); !bytes.Equal(got, data) {
			t.Fatalf("%s: %s after repo gc differs from the input", what, c)
		}
	}

	spy := &pinSpy{Kubo: k.Client}
	c, data, err := importData(spy, 11)
	if err != nil {
		t.Fatal(err)
	}
	if spy.pinned != 1 {
		t.Fatalf("PinBlock pinned %d times, want once", spy.pinned)
	}
	survivesGC("PinBlock", c, data)

	// PinBlock held back (a GC waiting for the import's lock) past
	// nardag's wait: kubo pins with its walk.
	spy = &pinSpy{Kubo: k.Client, block: make(chan struct{})}
	c, data, err = importData(spy, 12)
	close(spy.block)
	if err != nil {
		t.Fatal(err)
	}
	if spy.calls != 1 || spy.pinned != 0 {
		t.Fatalf("PinBlock called %d times, pinned %d, want 1 and 0", spy.calls, spy.pinned)
	}
	survivesGC("fallback", c, data)

	// The import fails after the root was pinned: no pin is left.
	boom := errors.New("daemon refused")
	spy = &pinSpy{Kubo: k.Client, failDag: boom}
	_, data, err = importData(spy, 13)
	if !errors.Is(err, boom) || spy.pinned != 1 {
		t.Fatalf("Import: %v, PinBlock pinned %d times; want %v and once", err, spy.pinned, boom)
	}
	root, err := nardag.Build(ctx, bytes.NewReader(data), "nix-refs-4096-253952", nil, func(cid.Cid, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := k.Client.IsPinned(ctx, root); err != nil || ok {
		t.Fatalf("root %s of the failed import pinned %v (%v), want unpinned", root, ok, err)
	}
}

// TestImportWithGCWaiting: a garbage collection that asks for kubo's GC
// lock while an import holds it makes the root's PinBlock wait behind it
// (kubo's lock is a sync.RWMutex); Import falls back to kubo's own pin,
// the import ends, the GC runs, and the DAG is whole after it.
func TestImportWithGCWaiting(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// 24 MiB: more than the pipes and socket buffers between the
	// builder and kubo's import hold, so kubo has started (and holds its
	// lock) once the first 16 MiB went.
	data := randomBytes(21, 24<<20+11)
	gcDone := make(chan error, 1)
	spy := &pinSpy{Kubo: k.Client}
	c, err := nardag.Import(ctx, spy, func(put nardag.Sink) (cid.Cid, error) {
		sent := 0
		return nardag.Build(ctx, bytes.NewReader(data), "nix-refs-4096-253952", nil, func(c cid.Cid, b []byte) error {
			if sent < 16<<20 && sent+len(b) >= 16<<20 {
				// Start a GC, which waits for the import's lock, before
				// the rest and the root go.
				go func() { gcDone <- k.Client.RepoGC(ctx) }()
				time.Sleep(time.Second)
				select {
				case err := <-gcDone:
					t.Errorf("repo gc did not wait for the import (%v)", err)
					gcDone <- err
				default:
				}
			}
			sent += len(b)
			return put(c, b)
		})
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-gcDone; err != nil {
		t.Fatalf("repo gc: %v", err)
	}
	if spy.calls != 1 || spy.pinned != 0 {
		t.Errorf("PinBlock called %d times, pinned %d; want once, held back by the GC", spy.calls, spy.pinned)
	}
	if ok, err := k.Client.IsPinned(ctx, c); err != nil || !ok {
		t.Fatalf("%s pinned %v (%v)", c, ok, err)
	}
	if err := k.Client.RepoGC(ctx); err != nil {
		t.Fatal(err)
	}
	if got := catAll(t, k.Client, ctx, c); !bytes.Equal(got, data) {
		t.Fatalf("%s after the GCs differs from the input", c)
	}
}
