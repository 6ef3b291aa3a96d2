package status

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/retention"
)

// Retention is what the cache holds and what a prune under a policy
// would do: computed as `nix-ipfs prune --dry-run` does, changing nothing.
type Retention struct {
	CacheDir   string          `json:"cache_dir"`
	Policy     string          `json:"policy"`
	CachePaths int             `json:"cache_paths"`
	CacheBytes int64           `json:"cache_bytes"`
	Roots      int             `json:"roots"`
	LiveRoots  int             `json:"live_roots"`
	Pins       []retention.Pin `json:"pins"`
	KeptPaths  int             `json:"kept_paths"`
	// WouldRetire and WouldFree are what a prune would remove now.
	WouldRetire int      `json:"would_retire"`
	WouldFree   int64    `json:"would_free_bytes"`
	Problems    []string `json:"problems,omitempty"`
}

// CollectRetention reads the cache, the roots and the pins and computes the
// plan for pol.
func CollectRetention(ctx context.Context, js jetstream.JetStream, stream, cacheDir string, pol retention.Policy) (*Retention, error) {
	// The index of the whole cache, as prune holds it: the same tighter
	// GC target keeps the peak near what is live (issue 24).
	defer retention.TightGC()()
	ix, roots, pins, err := retention.Load(ctx, js, stream, cacheDir, pol.Grace)
	if err != nil {
		return nil, err
	}
	p := retention.Survey(ix, roots, pins, pol, time.Now())
	if pins == nil {
		pins = []retention.Pin{}
	}
	return &Retention{
		CacheDir: cacheDir, CachePaths: p.CachePaths, CacheBytes: p.CacheBytes, Roots: p.Roots, LiveRoots: p.LiveRoots.Len(),
		Pins: pins, KeptPaths: p.KeptPaths, WouldRetire: p.RetireCount, WouldFree: p.FreedBytes, Problems: p.Problems,
		Policy: fmt.Sprintf("--keep-for %s --keep-last-per-job %d --grace %s", pol.KeepFor, pol.KeepLastPerJob, pol.Grace),
	}, nil
}

// KeptBytes is what the cache would hold after a prune now: the bytes of
// the live set as the policy has it.
func (r *Retention) KeptBytes() int64 { return r.CacheBytes - r.WouldFree }

// WriteText writes the retention summary for a person.
func (r *Retention) WriteText(w io.Writer) {
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\ncache %s: %d paths, %s\n", r.CacheDir, r.CachePaths, retention.Bytes(r.CacheBytes))
	fmt.Fprintf(w, "roots: %d, live under %s: %d; kept paths: %d\n", r.Roots, r.Policy, r.LiveRoots, r.KeptPaths)
	fmt.Fprintf(w, "pins: %d\n", len(r.Pins))
	for _, p := range r.Pins {
		live := p.Live()
		last := ""
		if len(live) > 0 {
			last = live[len(live)-1]
		}
		fmt.Fprintf(w, "  %s  keeps %d of %d revisions, newest %s\n", p.Name, min(p.KeepRevisions, len(p.Revisions)), len(p.Revisions), last)
	}
	fmt.Fprintf(w, "a prune now would retire %d paths and free %s\n", r.WouldRetire, retention.Bytes(r.WouldFree))
	for _, pr := range r.Problems {
		fmt.Fprintf(w, "  problem: %s\n", pr)
	}
}
