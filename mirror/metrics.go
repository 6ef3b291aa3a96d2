package mirror

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

type metrics struct {
	pins    *prometheus.CounterVec
	bytes   prometheus.Counter
	pinTime prometheus.Histogram
	events  *prometheus.CounterVec
}

var defaultMetrics = func() *metrics {
	m := &metrics{
		pins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_mirror_pins_total",
			Help: "CIDs handled, by result (pinned, already_pinned, failed) and error kind.",
		}, []string{"result", "kind"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixipfs_mirror_pinned_bytes_total", Help: "NAR bytes pinned (fresh pins only).",
		}),
		pinTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixipfs_mirror_pin_seconds", Help: "Time to pin (and verify) one CID that was not pinned yet.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 12),
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_mirror_events_total", Help: "Published events handled by the mirror, by outcome (acked, retried, dead_lettered).",
		}, []string{"outcome"}),
	}
	prometheus.MustRegister(m.pins, m.bytes, m.pinTime, m.events)
	return m
}()

// RecordPin counts a pin's outcome in the mirror's metrics
// (nixipfs_mirror_pins_total and the rest): the PinnerOptions.OnPin of every
// command that pins onto a mirror's node.
func RecordPin(r Result, err error) { defaultMetrics.onPin(r, err) }

func (m *metrics) onPin(r Result, err error) {
	switch {
	case err != nil:
		m.pins.WithLabelValues("failed", errs.KindOf(err).String()).Inc()
	case r.Fresh:
		m.pins.WithLabelValues("pinned", "").Inc()
		m.bytes.Add(float64(r.Item.NarSize))
		m.pinTime.Observe(r.Took.Seconds())
	default:
		m.pins.WithLabelValues("already_pinned", "").Inc()
	}
}

func (m *metrics) onEvent(_ events.Delivery, o events.Outcome, _ error, _ time.Duration) {
	m.events.WithLabelValues(string(o)).Inc()
}
