package snapshot

import (
	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/metrics"
)

// Metrics are the snapshot's Prometheus counters. Build them once per
// process (per registry) with NewMetrics and pass them in Config.Metrics;
// every run of that process adds to the same counters. A nil *Metrics
// counts nothing.
type Metrics struct {
	rows   *prometheus.CounterVec
	bytes  prometheus.Counter
	chunks prometheus.Counter
}

// NewMetrics creates the counters and registers them on reg; with a nil
// reg they are not registered (tests). Registering twice on one registry
// is an error: build them once and share them.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replicator_snapshot_rows_total",
			Help: "Rows copied from source to target by the snapshot, per table."}, []string{"table"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_snapshot_bytes_total",
			Help: "Bytes of COPY data (text or binary format) copied from source to target by the snapshot."}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_snapshot_chunks_done_total",
			Help: "Copy chunks committed on the target."}),
	}
	if err := metrics.Register(reg, "snapshot", m.rows, m.bytes, m.chunks); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) copied(table string, rows, bytes int64) {
	if m == nil {
		return
	}
	m.rows.WithLabelValues(table).Add(float64(rows))
	m.bytes.Add(float64(bytes))
}

func (m *Metrics) chunkDone() {
	if m != nil {
		m.chunks.Inc()
	}
}
