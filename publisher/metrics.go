package publisher

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

type metrics struct {
	paths    *prometheus.CounterVec
	bytes    prometheus.Counter
	pathTime prometheus.Histogram
	events   *prometheus.CounterVec
}

var defaultMetrics = func() *metrics {
	m := &metrics{
		paths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_publisher_paths_total", Help: "Store paths handled, by result (published, announced, failed) and error kind.",
		}, []string{"result", "kind"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixipfs_publisher_nar_bytes_total", Help: "NAR bytes published.",
		}),
		pathTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixipfs_publisher_path_seconds", Help: "Time to publish one store path.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_publisher_events_total", Help: "Built events handled, by outcome (acked, retried, dead_lettered).",
		}, []string{"outcome"}),
	}
	prometheus.MustRegister(m.paths, m.bytes, m.pathTime, m.events)
	return m
}()

func (m *metrics) onPath(p *events.Published, fresh bool, took time.Duration, err error) {
	switch {
	case err != nil:
		m.paths.WithLabelValues("failed", errs.KindOf(err).String()).Inc()
	case fresh:
		m.paths.WithLabelValues("published", "").Inc()
		m.bytes.Add(float64(p.NarSize))
		m.pathTime.Observe(took.Seconds())
	default:
		m.paths.WithLabelValues("announced", "").Inc()
	}
}

func (m *metrics) onEvent(_ events.Delivery, o events.Outcome, _ error, _ time.Duration) {
	m.events.WithLabelValues(string(o)).Inc()
}
