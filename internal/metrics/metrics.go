// Package metrics holds the Prometheus metrics every worker shares: the
// backlog of its durable consumer, so that "how far behind is it" is one
// query across publishers and mirrors.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	consumerPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nixipfs_consumer_pending",
		Help: "Events on the stream this durable consumer has not yet been given (its lag).",
	}, []string{"consumer"})
	consumerAckPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nixipfs_consumer_ack_pending",
		Help: "Events given to this durable consumer and not yet acked (in flight or waiting for a retry).",
	}, []string{"consumer"})
	consumerRedelivered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nixipfs_consumer_redelivered",
		Help: "Events this durable consumer has been given more than once and not yet acked.",
	}, []string{"consumer"})
)

func init() {
	prometheus.MustRegister(consumerPending, consumerAckPending, consumerRedelivered)
}

// Lag records a consumer's backlog; events.ConsumerOptions.OnLag calls it.
func Lag(consumer string, pending uint64, ackPending, redelivered int) {
	consumerPending.WithLabelValues(consumer).Set(float64(pending))
	consumerAckPending.WithLabelValues(consumer).Set(float64(ackPending))
	consumerRedelivered.WithLabelValues(consumer).Set(float64(redelivered))
}
