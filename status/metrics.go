package status

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Metrics exports what only the stream knows as Prometheus gauges, read
// by a Collector at each scrape: the live set, each mirror's part of it
// and its last pin, the dead letters, each consumer's backlog. The
// workers' own metrics cannot say whether a mirror holds the whole live
// set; deploy/prometheus's "mirror short of the live set" alert needs
// these. `nix-ipfs status --listen` serves them at /metrics.
type Metrics struct {
	c       *Collector
	timeout time.Duration
	log     *zap.Logger

	up, live, liveBytes, dead, holds, lastPin, pending *prometheus.Desc
}

var _ prometheus.Collector = (*Metrics)(nil)

// NewMetrics returns the gauges of c; a scrape waits at most timeout.
func NewMetrics(c *Collector, timeout time.Duration, log *zap.Logger) *Metrics {
	if log == nil {
		log = zap.NewNop()
	}
	return &Metrics{c: c, timeout: timeout, log: log,
		up:        prometheus.NewDesc("nixipfs_status_up", "1 when the stream could be read at this scrape, else 0 (and no other series).", nil, nil),
		live:      prometheus.NewDesc("nixipfs_live_paths", "Store paths published and not retired.", nil, nil),
		liveBytes: prometheus.NewDesc("nixipfs_live_nar_bytes", "NAR bytes of the live paths.", nil, nil),
		dead:      prometheus.NewDesc("nixipfs_dead_letters", "Dead letters in the stream.", nil, nil),
		holds:     prometheus.NewDesc("nixipfs_mirror_live_paths", "Live paths whose pin the mirror confirmed.", []string{"mirror"}, nil),
		lastPin:   prometheus.NewDesc("nixipfs_mirror_last_pin_timestamp_seconds", "When the mirror last confirmed a pin.", []string{"mirror"}, nil),
		pending:   prometheus.NewDesc("nixipfs_stream_consumer_pending", "Events a durable consumer has not yet been delivered, as the stream counts them.", []string{"consumer"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.up, m.live, m.liveBytes, m.dead, m.holds, m.lastPin, m.pending} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	r, err := m.c.Collect(ctx)
	if err != nil {
		m.log.Warn("status metrics", zap.Error(err))
		ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, 0)
		return
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(m.up, 1)
	g(m.live, float64(r.Overview.Live.Paths))
	g(m.liveBytes, float64(r.Overview.Live.Bytes))
	g(m.dead, float64(r.DeadLetters))
	for _, ms := range r.Overview.Mirrors {
		g(m.holds, float64(ms.Holds), ms.Name)
		g(m.lastPin, float64(ms.LastPin.UnixMilli())/1000, ms.Name)
	}
	for _, c := range r.Consumers {
		g(m.pending, float64(c.Pending), c.Name)
	}
}
