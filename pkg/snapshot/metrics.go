package snapshot

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the snapshot's Prometheus counters.
type metrics struct {
	rows   *prometheus.CounterVec
	bytes  prometheus.Counter
	chunks prometheus.Counter
}

// newMetrics registers the counters on reg (nil for none). Registering
// twice on one registry (a second run in one process) reuses the first.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replicator_snapshot_rows_total",
			Help: "Rows copied from source to target by the snapshot, per table."}, []string{"table"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_snapshot_bytes_total",
			Help: "Bytes of COPY text copied from source to target by the snapshot."}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_snapshot_chunks_done_total",
			Help: "Copy chunks committed on the target."}),
	}
	if reg == nil {
		return m
	}
	m.rows = register(reg, m.rows)
	m.bytes = register(reg, m.bytes)
	m.chunks = register(reg, m.chunks)
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
