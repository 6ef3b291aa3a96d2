package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// Root is the outputs of one build: it keeps their whole closure while it
// is live.
type Root struct {
	// Outputs are absolute store paths, sorted.
	Outputs []string `json:"outputs"`
	// Job is what keep-last-per-job counts by (JobOf).
	Job string `json:"job"`
	// LastBuilt is the time of the latest "built" event for these outputs.
	LastBuilt time.Time `json:"last_built"`
}

func (r Root) key() string { return strings.Join(r.Outputs, " ") }

// Roots is a set of roots, one per distinct set of outputs.
type Roots struct {
	byKey map[string]*Root
}

// NewRoots returns an empty set.
func NewRoots() *Roots { return &Roots{byKey: map[string]*Root{}} }

// Add records a build of r.Outputs; a later build of the same outputs moves
// LastBuilt forward and takes its job.
func (rs *Roots) Add(r Root) {
	if len(r.Outputs) == 0 {
		return
	}
	r.Outputs = slices.Clone(r.Outputs)
	slices.Sort(r.Outputs)
	r.Outputs = slices.Compact(r.Outputs)
	k := r.key()
	if old, ok := rs.byKey[k]; ok {
		if r.LastBuilt.After(old.LastBuilt) {
			old.LastBuilt, old.Job = r.LastBuilt, r.Job
		}
		return
	}
	rs.byKey[k] = &r
}

// AddBuilt records a "built" event.
func (rs *Roots) AddBuilt(ev *events.Built) {
	rs.Add(Root{Outputs: ev.OutPaths, Job: JobOf(ev), LastBuilt: ev.Time})
}

// Len is the number of roots.
func (rs *Roots) Len() int { return len(rs.byKey) }

// All returns the roots, newest first (ties by outputs).
func (rs *Roots) All() []Root {
	sorted := rs.sorted()
	out := make([]Root, len(sorted))
	for i, r := range sorted {
		out[i] = *r
	}
	return out
}

// sorted returns the roots as All does, without copying them: 8 bytes a
// root where every path is built (issue 24). The caller must not change
// them.
func (rs *Roots) sorted() []*Root {
	out := make([]*Root, 0, len(rs.byKey))
	for _, r := range rs.byKey {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastBuilt.Equal(out[j].LastBuilt) {
			return out[i].LastBuilt.After(out[j].LastBuilt)
		}
		return out[i].key() < out[j].key()
	})
	return out
}

// ReadBuilt adds the roots of every "built" event in the stream. Events
// that do not decode are skipped: they name no outputs anyone can trust.
func (rs *Roots) ReadBuilt(ctx context.Context, js jetstream.JetStream, stream string) error {
	var mu sync.Mutex
	return readEvents(ctx, js, stream, events.SubjectBuilt, time.Time{}, func(ev events.Event) {
		if b, ok := ev.(*events.Built); ok {
			mu.Lock()
			rs.AddBuilt(b)
			mu.Unlock()
		}
	})
}

// ReadPublishedSince returns the store paths of the "published" events
// stored since the given time: paths published within the grace period,
// whatever their files' modification times say (a cache restored from a
// copy, a clock set back).
func ReadPublishedSince(ctx context.Context, js jetstream.JetStream, stream string, since time.Time) (map[string]bool, error) {
	out := map[string]bool{}
	var mu sync.Mutex
	err := readEvents(ctx, js, stream, events.SubjectPublished, since, func(ev events.Event) {
		if p, ok := ev.(*events.Published); ok {
			mu.Lock()
			out[p.StorePath] = true
			mu.Unlock()
		}
	})
	return out, err
}

// readEvents calls fn, from several goroutines, with every valid event on
// subject in the stream (those stored since since, if it is set) that the
// stream held when it began.
func readEvents(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, fn func(events.Event)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	// Decoding (a schema check per event) is the costly part: spread it
	// over the CPUs while the stream is read in order.
	data := make(chan []byte, 1024)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range data {
				if ev, err := events.Decode(d); err == nil {
					fn(ev)
				}
			}
		}()
	}
	err := events.Scan(ctx, js, stream, events.ScanOptions{Consumer: cfg, Batch: 512}, func(m jetstream.Msg) error {
		data <- m.Data()
		return nil
	})
	close(data)
	wg.Wait()
	if errs.Is(err, errs.Invalid) {
		return fmt.Errorf("%w: no roots to keep anything by (check --stream and --nats-url)", err)
	}
	return err
}

// rootsFile is the roots a cache remembers, so that roots outlive the
// stream's max-age: prune merges it with the stream and writes it back.
type rootsFile struct {
	Version int    `json:"version"`
	Roots   []Root `json:"roots"`
}

// LoadFile adds the roots recorded in path; a missing file adds none.
func (rs *Roots) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("roots file: %w", err)
	}
	var f rootsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return errs.Errorf(errs.Invalid, "roots file %s: %v (move it away to start from the stream's roots only)", path, err)
	}
	if f.Version != 1 {
		return errs.Errorf(errs.Invalid, "roots file %s: version %d, this code reads version 1", path, f.Version)
	}
	for _, r := range f.Roots {
		rs.Add(r)
	}
	return nil
}

// SaveFile writes the roots to path atomically, keeping only those for
// which keep returns true.
func (rs *Roots) SaveFile(path string, keep func(Root) bool) error {
	f := rootsFile{Version: 1, Roots: []Root{}}
	for _, r := range rs.All() {
		if keep(r) {
			f.Roots = append(f.Roots, r)
		}
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return fmt.Errorf("roots file: %w", err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}
