package verify

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	rows             *prometheus.CounterVec
	chunksMismatched prometheus.Counter
}

// newMetrics registers the verify metrics on reg. Registering twice on one
// registry (two runs in one process) reuses the first collectors.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "replicator_verify_rows_total",
			Help: "Rows checksummed by verify, per side (source, target).",
		}, []string{"side"}),
		chunksMismatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replicator_verify_chunks_mismatched_total",
			Help: "Chunks (key ranges or hash buckets) whose count or checksum differed between source and target.",
		}),
	}
	if reg == nil {
		return m
	}
	if err := reg.Register(m.rows); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			m.rows = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	if err := reg.Register(m.chunksMismatched); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			m.chunksMismatched = are.ExistingCollector.(prometheus.Counter)
		}
	}
	return m
}
