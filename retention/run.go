package retention

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/retention/roots"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// PolicyFlags are the policy settings that prune and status share.
type PolicyFlags struct {
	CacheDir       string
	KeepFor        time.Duration
	KeepLastPerJob int
	Grace          time.Duration
}

// Register adds the policy flags.
func (f *PolicyFlags) Register(s *config.Set) {
	// The same help text wherever a flag appears (cli/settings_test.go);
	// Validate says which are required.
	s.StringVar(&f.CacheDir, "cache-dir", "", "the publisher's binary cache directory")
	s.DurationVar(&f.KeepFor, "keep-for", 0, "keep every root built within this long, with its closure, e.g. 720h (prune: required)")
	s.IntVar(&f.KeepLastPerJob, "keep-last-per-job", 0, "also keep the last N roots of each job (Hydra's project:jobset:job, else the derivation's name without its version)")
	s.DurationVar(&f.Grace, "grace", 6*time.Hour, "never remove a path whose narinfo or NAR was written, or found present by the publisher, or whose published event was stored, within this long (what is being published now)")
}

// Policy returns the policy.
func (f *PolicyFlags) Policy() Policy {
	return Policy{KeepFor: f.KeepFor, KeepLastPerJob: f.KeepLastPerJob, Grace: f.Grace}
}

// Validate checks the policy flags.
func (f *PolicyFlags) Validate(s *config.Set, required bool) error {
	if required && f.CacheDir == "" {
		return errors.New("--cache-dir is required: the binary cache to prune")
	}
	if required && (s == nil || s.Sources["keep-for"] == "" || s.Sources["keep-for"] == "default") {
		return errors.New("--keep-for is required: how long a build stays kept (0s keeps only what --keep-last-per-job and pins keep)")
	}
	if f.KeepFor < 0 || f.Grace < 0 || f.KeepLastPerJob < 0 {
		return errors.New("--keep-for, --grace and --keep-last-per-job cannot be negative")
	}
	return nil
}

// PruneConfig is prune's settings.
type PruneConfig struct {
	NATS   config.NATS
	Log    config.Log
	Policy PolicyFlags
	DryRun bool
	JSON   bool
	// KuboAPI is this host's kubo, whose pins of retired CIDs go; "none"
	// skips that.
	KuboAPI    string
	Host       string
	AllowEmpty bool

	set *config.Set
}

// Register adds prune's flags.
func (c *PruneConfig) Register(s *config.Set) {
	c.set = s
	c.NATS.Register(s)
	c.Log.Register(s, "console")
	c.Policy.Register(s)
	s.BoolVar(&c.DryRun, "dry-run", false, "change nothing: print what would go, and the bytes it would free")
	s.BoolVar(&c.JSON, "json", false, "print the plan and the result as JSON")
	s.StringVar(&c.KuboAPI, "kubo-api", "", "this host's kubo RPC API, where retired CIDs are unpinned (default: $IPFS_PATH/api, else ~/.ipfs/api; \"none\" to leave its pins)")
	host, _ := os.Hostname()
	s.StringVar(&c.Host, "host", host, "this host's name in the retired events")
	s.BoolVar(&c.AllowEmpty, "allow-empty", false, "prune even when no root is live (every path older than --grace would go): without it prune refuses, since that usually means the wrong --stream or NATS")
}

// Validate checks the settings.
func (c *PruneConfig) Validate() error {
	if err := c.Policy.Validate(c.set, true); err != nil {
		return err
	}
	if c.Host == "" {
		return errors.New("--host: this host's name is needed for the retired events")
	}
	return nil
}

// Load reads what a plan needs: the roots (the cache's roots file and the
// stream's "built" events), the pins, the cache, and (grace > 0) the paths
// published within grace.
func Load(ctx context.Context, js jetstream.JetStream, stream, cacheDir string, grace time.Duration) (*Index, *Roots, []Pin, error) {
	// The index first: the roots keep the outputs it holds as its ids.
	ix, err := ReadIndex(cacheDir)
	if err != nil {
		return nil, nil, nil, err
	}
	rs := roots.NewOver(ix)
	if err := rs.LoadFile(cachedir.Cache{Dir: cacheDir}.StatePath(cachedir.RootsFile)); err != nil {
		return nil, nil, nil, err
	}
	if err := roots.ReadBuilt(ctx, js, stream, rs); err != nil {
		return nil, nil, nil, err
	}
	pins, err := OpenPins(ctx, js, 0, false)
	if err != nil {
		return nil, nil, nil, err
	}
	list, err := pins.List(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if grace > 0 {
		if ix.RecentlyPublished, err = roots.ReadPublishedSince(ctx, js, stream, time.Now().Add(-grace)); err != nil {
			return nil, nil, nil, err
		}
	}
	return ix, rs, list, nil
}

// GCPercent is the garbage collector's target while prune or status
// holds a whole cache's index, the roots and the plan: a tighter one
// keeps the peak near what is live, at little CPU cost since what is
// live holds almost no pointers to follow (issue 24, docs/BENCHMARKS.md).
const GCPercent = 25

// TightGC sets GCPercent, unless the environment sets GOGC, and returns
// what puts the previous target back.
func TightGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(GCPercent)
	return func() { debug.SetGCPercent(old) }
}

// RunPrune runs prune as the CLI does.
func RunPrune(ctx context.Context, cfg PruneConfig, log *zap.Logger, out io.Writer) error {
	defer TightGC()()
	nc, js, err := cfg.NATS.ConnectOnce("nix-ipfs prune")
	if err != nil {
		return err
	}
	defer nc.Close()
	start := time.Now()
	ix, roots, pins, err := Load(ctx, js, cfg.NATS.Stream, cfg.Policy.CacheDir, cfg.Policy.Grace)
	if err != nil {
		return err
	}
	plan := Decide(ix, roots, pins, cfg.Policy.Policy(), time.Now())
	log.Info("plan", zap.Int("roots", plan.Roots), zap.Int("live_roots", plan.LiveRoots.Len()), zap.Int("pins", len(pins)),
		zap.Int("cache_paths", plan.CachePaths), zap.Int("kept", plan.KeptPaths), zap.Int("retire", plan.Retire.Len()),
		zap.Int("problems", len(plan.Problems)), zap.Duration("took", time.Since(start)))
	for _, p := range plan.Problems {
		log.Warn("problem found (left as it is)", zap.String("problem", p))
	}
	if plan.LiveRoots.Len() == 0 && plan.Retire.Len() > 0 && !cfg.AllowEmpty && !cfg.DryRun {
		return errs.Errorf(errs.Invalid, "no live root (%d roots known, %d pins): prune would remove all %d paths not written within --grace; check --nats-url and --stream, or pass --allow-empty",
			plan.Roots, len(pins), plan.Retire.Len())
	}
	if cfg.DryRun {
		return writePlan(out, plan, nil, cfg.JSON)
	}
	// A soft limit above what the plan holds: the run's garbage is
	// returned, not grown into (issue 24).
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(ms.HeapAlloc)*3/2 + 64<<20))
	x := &Executor{Dir: cfg.Policy.CacheDir, JS: js, Host: cfg.Host, Grace: cfg.Policy.Grace, Log: log}
	if cfg.KuboAPI != "none" && plan.Retire.Len() > 0 {
		k, err := ipfs.Dial(cfg.KuboAPI)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = k.Ping(pctx)
			cancel()
		}
		if err != nil {
			return fmt.Errorf("this host's kubo, to unpin retired CIDs: %w (pass --kubo-api none to leave its pins)", err)
		}
		x.Kubo = k
	}
	res, runErr := x.Run(ctx, plan)
	// Remember the roots that still hold something, so that they outlive
	// the stream's max-age (by the narinfos' names, a byte a path of the
	// index: not a second index).
	if err := saveRoots(cfg.Policy.CacheDir, ix, roots); err != nil {
		log.Warn("cannot record the roots", zap.Error(err))
	}
	log.Info("pruned", zap.Int("retired", res.Retired), zap.Int64("freed_bytes", res.FreedBytes),
		zap.Int("spared", res.Spared), zap.Duration("took", time.Since(start)))
	if err := writePlan(out, plan, &res, cfg.JSON); err != nil {
		return err
	}
	return runErr
}

// saveRoots writes the roots file: the roots built within a day (maybe
// still being published) and those with an output the cache still holds.
func saveRoots(dir string, ix *Index, roots *Roots) error {
	c := cachedir.Cache{Dir: dir}
	still := make([]bool, len(ix.entries))
	var other map[hashKey]bool // published while prune ran
	if err := c.EachNarInfo(func(h string) {
		if id := ix.id(h); id >= 0 {
			still[id] = true
		} else if len(h) == storepath.HashLen {
			if other == nil {
				other = map[hashKey]bool{}
			}
			other[hashKey([]byte(h))] = true
		}
	}); err != nil {
		return err
	}
	return roots.SaveFile(c.StatePath(cachedir.RootsFile), func(r Root) bool {
		if time.Since(r.LastBuilt) < 24*time.Hour {
			return true
		}
		for _, o := range r.Outputs {
			h := storepath.HashPart(o)
			if id := ix.id(h); (id >= 0 && still[id]) || (len(h) == storepath.HashLen && other[hashKey([]byte(h))]) {
				return true
			}
		}
		return false
	})
}

// planOutput is what --json prints.
type planOutput struct {
	DryRun bool    `json:"dry_run"`
	Plan   *Plan   `json:"plan"`
	Result *Result `json:"result,omitempty"`
}

func writePlan(w io.Writer, p *Plan, res *Result, asJSON bool) error {
	if asJSON {
		return writePlanJSON(w, planOutput{res == nil, p, res})
	}
	verb := "would retire"
	if res != nil {
		verb = "retired"
	}
	fmt.Fprintf(w, "cache: %d paths, %s; roots: %d, live: %d; pins: %d\n", p.CachePaths, Bytes(p.CacheBytes), p.Roots, p.LiveRoots.Len(), len(p.Pins))
	fmt.Fprintf(w, "kept: %d paths (%d only for --grace %s)\n", p.KeptPaths, p.GracePaths, p.Policy.Grace)
	if res == nil {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i, r := range p.Retire.All() {
			fmt.Fprintf(tw, "  retire\t%s\t%s\t%s\n", r.StorePath, Bytes(int64(r.FileSize)), r.Why())
			if i%4096 == 4095 {
				// Columns aligned by blocks: a tabwriter holds every
				// line until it flushes, a million of them otherwise.
				tw.Flush()
			}
		}
		for _, o := range p.OrphanNARs {
			fmt.Fprintf(tw, "  remove\t%s\t\tno narinfo names it\n", o)
		}
		tw.Flush()
		fmt.Fprintf(w, "%s: %d paths, %d orphan NARs; frees %s\n", verb, p.Retire.Len(), len(p.OrphanNARs), Bytes(p.FreedBytes))
	} else {
		fmt.Fprintf(w, "%s: %d paths (%d NARs, %d orphan NARs), freed %s; %d announced, %d unpinned here, %d spared (published meanwhile), %d restored, %d unfinished\n",
			verb, res.Retired, res.NARsRemoved, res.OrphanNARs, Bytes(res.FreedBytes), res.Announced, res.Unpinned, res.Spared, res.Restored, res.Unfinished)
	}
	for _, pr := range p.Problems {
		fmt.Fprintf(w, "problem: %s\n", pr)
	}
	return nil
}

// writePlanJSON writes out as json.Encoder with a two-space indent would,
// byte for byte, but the live roots and the retirements one at a time:
// encoded at once, a million of them would be a buffer of half a
// gigabyte.
func writePlanJSON(w io.Writer, out planOutput) error {
	if out.Plan == nil || (out.Plan.Retire.Len() == 0 && out.Plan.LiveRoots.Len() == 0) {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	// Each long list is a placeholder in the rest, then written in its
	// place.
	const livePH, retirePH = `"\u0000live\u0000"`, `"\u0000retire\u0000"`
	plan := out.Plan
	shallow := *plan
	if plan.LiveRoots.Len() > 0 {
		shallow.LiveRoots = LiveRoots{placeholder: livePH}
	}
	if plan.Retire.Len() > 0 {
		shallow.Retire = Retirements{placeholder: retirePH}
	}
	out.Plan = &shallow
	head, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	const indent = "      " // inside {"plan": {"live_roots": [...]}}
	for _, l := range []struct {
		ph  string
		n   int
		get func(int) any
	}{
		{livePH, plan.LiveRoots.Len(), func(i int) any { return plan.LiveRoots.At(i) }},
		{retirePH, plan.Retire.Len(), func(i int) any { return plan.Retire.At(i) }},
	} {
		if l.n == 0 {
			continue
		}
		before, after, ok := bytes.Cut(head, []byte("[\n      "+l.ph+"\n    ]"))
		if !ok {
			return errors.New("plan JSON: no place for a list")
		}
		bw.Write(before)
		bw.WriteString("[")
		for i := 0; i < l.n; i++ {
			if i > 0 {
				bw.WriteString(",")
			}
			b, err := json.MarshalIndent(l.get(i), indent, "  ")
			if err != nil {
				return err
			}
			bw.WriteString("\n" + indent)
			bw.Write(b)
		}
		bw.WriteString("\n    ]")
		head = after
	}
	bw.Write(head)
	bw.WriteString("\n")
	return bw.Flush()
}

// Bytes formats a size for people.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
