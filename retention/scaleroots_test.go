package retention

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/retention/roots"
)

// TestScaleRoots measures what reading N "built" events into roots costs
// (NIX_IPFS_SCALE_ROOTS=N; skipped without it): the part of prune's
// memory TestScaleSmoke leaves out. NIX_IPFS_SCALE_HEAPPROFILE writes a
// heap profile at the end. The embedded NATS server's own allocations
// count in the figure.
func TestScaleRoots(t *testing.T) {
	s := os.Getenv("NIX_IPFS_SCALE_ROOTS")
	if s == "" {
		t.Skip("NIX_IPFS_SCALE_ROOTS=N to measure")
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	nt := testenv.StartNATS(t)
	_, js := nt.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-30 * 24 * time.Hour)
	var window []jetstream.PubAckFuture
	if err := synthcache.Nixpkgs("roots", n, func(i int, p synthcache.Path) error {
		ev := &events.Built{Header: events.Header{Time: old}, Host: "a", StoreDir: "/nix/store", OutPaths: []string{p.StorePath}}
		events.Seal(ev)
		data, err := events.Encode(ev)
		if err != nil {
			return err
		}
		f, err := js.PublishAsync(events.SubjectBuilt, data)
		if err != nil {
			return err
		}
		if window = append(window, f); len(window) == 1000 {
			for _, f := range window {
				<-f.Ok()
			}
			window = window[:0]
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range window {
		<-f.Ok()
	}
	defer debug.SetGCPercent(debug.SetGCPercent(40))
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	peak := sampleHeap(t)
	rs := NewRoots()
	if err := roots.ReadBuilt(ctx, js, events.DefaultStream, rs); err != nil {
		t.Fatal(err)
	}
	high := peak()
	writeHeapProfile(t, "")
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("%d roots: peak %.0f B a root, live %.0f B a root", rs.Len(), float64(high-base.HeapInuse)/float64(n), float64(after.HeapInuse-base.HeapInuse)/float64(n))
}
