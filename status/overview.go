package status

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/replication"
	"github.com/nix-ipfs/nix-ipfs/retention"
)

// Overview is what an operator watches beyond the stream's counters: the
// flow of the last hour, the live set and each mirror's share of it, and
// the latest builds with the mirrors that hold their closures. The status
// page shows it, and `nix-ipfs status --json` prints the same figures.
type Overview struct {
	// Now is the moment the figures describe.
	Now     time.Time                 `json:"now"`
	Flow    *Flow                     `json:"flow"`
	Live    replication.Live          `json:"live"`
	Mirrors []replication.MirrorShare `json:"mirrors"`
	Builds  []replication.BuildReport `json:"latest_builds"`
}

// Flow is how many events each stage stored in the last hour, in buckets.
type Flow struct {
	Since  time.Time     `json:"since"`
	Bucket time.Duration `json:"bucket_ns"`
	Stages []Stage       `json:"stages"`
}

// Stage is one stage's events in the flow window.
type Stage struct {
	// Name is built, published, pinned, retired or dead letters.
	Name string `json:"name"`
	// Unit says what one event stands for.
	Unit    string `json:"unit"`
	Total   int    `json:"total"`
	Buckets []int  `json:"buckets"`
}

// Max returns the largest bucket of any stage (at least 1), the scale of
// the page's charts.
func (f *Flow) Max() int {
	m := 1
	for _, s := range f.Stages {
		for _, b := range s.Buckets {
			m = max(m, b)
		}
	}
	return m
}

// FlowWindow and FlowBuckets shape the flow: an hour in 5-minute buckets.
const (
	FlowWindow  = time.Hour
	FlowBuckets = 12
)

// stageOf is the index of a subject's stage in Flow.Stages; -1 for
// subjects not shown.
func stageOf(subject string) int {
	switch {
	case subject == events.SubjectBuilt:
		return 0
	case subject == events.SubjectPublished:
		return 1
	case strings.HasPrefix(subject, events.SubjectPinnedPrefix):
		return 2
	case subject == events.SubjectRetired:
		return 3
	case strings.HasPrefix(subject, events.SubjectDeadPrefix):
		return 4
	}
	return -1
}

// CollectFlow counts the events the stream stored in the window before
// now, by stage, by the time the stream stored them.
func CollectFlow(ctx context.Context, js jetstream.JetStream, stream string, now time.Time) (*Flow, error) {
	since := now.Add(-FlowWindow)
	f := &Flow{Since: since, Bucket: FlowWindow / FlowBuckets}
	for _, st := range []struct{ name, unit string }{
		{"built", "builds"}, {"published", "paths"}, {"pinned", "pins"}, {"retired", "paths"}, {"dead letters", "events"},
	} {
		f.Stages = append(f.Stages, Stage{Name: st.name, Unit: st.unit, Buckets: make([]int, FlowBuckets)})
	}
	err := events.Scan(ctx, js, stream, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectPrefix + ">"}, DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime: &since, InactiveThreshold: 10 * time.Second,
	}}, func(m jetstream.Msg) error {
		i := stageOf(m.Subject())
		if i < 0 {
			return nil
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		b := min(max(int(meta.Timestamp.Sub(since)/f.Bucket), 0), FlowBuckets-1)
		f.Stages[i].Buckets[b]++
		f.Stages[i].Total++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("the last hour's flow: %w", err)
	}
	return f, nil
}

// Collector gathers a whole Report, overview included. It keeps a
// replication.Tracker, so a page that asks again reads only the events
// stored since. It is safe for concurrent use.
type Collector struct {
	js      jetstream.JetStream
	o       CollectorOptions
	tracker *replication.Tracker
	mu      sync.Mutex
}

// CollectorOptions configure a Collector.
type CollectorOptions struct {
	Stream string
	// LastDead is how many of the latest dead letters to keep.
	LastDead int
	// Builds is how many of the latest builds to show.
	Builds int
	// CacheDir, if set, adds the retention figures under Policy.
	CacheDir string
	Policy   retention.Policy
	Log      *zap.Logger
}

// NewCollector returns a Collector.
func NewCollector(js jetstream.JetStream, o CollectorOptions) *Collector {
	if o.Stream == "" {
		o.Stream = events.DefaultStream
	}
	if o.Builds <= 0 {
		o.Builds = 10
	}
	return &Collector{js: js, o: o, tracker: replication.NewTracker(js, o.Stream, o.Log)}
}

// Collect returns the report as of now. Calls are serialized, so two
// pages asked at once read the stream once each, in turn.
func (c *Collector) Collect(ctx context.Context) (*Report, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	r, err := Collect(ctx, c.js, c.o.Stream, c.o.LastDead)
	if err != nil {
		return nil, err
	}
	if err := c.tracker.Update(ctx); err != nil {
		return nil, fmt.Errorf("replication: %w", err)
	}
	ov := &Overview{Now: now}
	if ov.Flow, err = CollectFlow(ctx, c.js, c.o.Stream, now); err != nil {
		return nil, err
	}
	c.tracker.Read(func(s *replication.State) {
		ov.Live, ov.Mirrors, ov.Builds = s.Live(), s.Mirrors(), s.LatestBuilds(c.o.Builds)
	})
	r.Overview = ov
	if c.o.CacheDir != "" {
		if r.Retention, err = CollectRetention(ctx, c.js, c.o.Stream, c.o.CacheDir, c.o.Policy); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Tracker returns the Collector's replication tracker.
func (c *Collector) Tracker() *replication.Tracker { return c.tracker }

// WriteText writes the overview for a person.
func (o *Overview) WriteText(w io.Writer) {
	if o == nil {
		return
	}
	fmt.Fprintf(w, "\nlast hour (since %s):", o.Flow.Since.Format(time.RFC3339))
	for _, s := range o.Flow.Stages {
		fmt.Fprintf(w, "  %s %d", s.Name, s.Total)
	}
	fmt.Fprintf(w, "\nlive: %d paths, %s of NARs\n", o.Live.Paths, retention.Bytes(o.Live.Bytes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MIRROR\tHOLDS\tOF LIVE\tLAST PIN")
	for _, m := range o.Mirrors {
		fmt.Fprintf(tw, "%s\t%d\t%.0f%%\t%s\n", m.Name, m.Holds, 100*m.Share, m.LastPin.Format(time.RFC3339))
	}
	tw.Flush()
	if len(o.Builds) > 0 {
		fmt.Fprintln(w, "\nlatest builds (mirrors holding the whole closure):")
	}
	for _, b := range o.Builds {
		held := strings.Join(b.Mirrors, ",")
		if !b.Published {
			held = "not all published"
		} else if held == "" {
			held = "none yet"
		}
		job := ""
		if b.Job != "" {
			job = "  " + b.Job
		}
		fmt.Fprintf(w, "  %s  %s%s  %s\n", b.Time.Format(time.RFC3339), strings.Join(b.OutPaths, " "), job, held)
	}
}
