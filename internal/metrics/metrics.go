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

// LagOf returns the events.ConsumerOptions.OnLag that records the backlog
// of the durable consumer named consumer.
func LagOf(consumer string) func(pending uint64, ackPending, redelivered int) {
	return func(pending uint64, ackPending, redelivered int) {
		consumerPending.WithLabelValues(consumer).Set(float64(pending))
		consumerAckPending.WithLabelValues(consumer).Set(float64(ackPending))
		consumerRedelivered.WithLabelValues(consumer).Set(float64(redelivered))
	}
}
