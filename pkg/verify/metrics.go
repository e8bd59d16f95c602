package verify

import (
	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/metrics"
)

// Metrics are verify's Prometheus counters. Build them once per process
// (per registry) with NewMetrics and pass them in Config.Metrics; every
// run of that process adds to the same counters. A nil *Metrics counts
// nothing.
type Metrics struct {
	rows             *prometheus.CounterVec
	chunksMismatched prometheus.Counter
}

// NewMetrics creates the counters and registers them on reg; with a nil
// reg they are not registered (tests). Registering twice on one registry
// is an error: build them once and share them.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "replicator_verify_rows_total",
			Help: "Rows checksummed by verify, per side (source, target).",
		}, []string{"side"}),
		chunksMismatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replicator_verify_chunks_mismatched_total",
			Help: "Chunks (key ranges or hash buckets) whose count or checksum differed between source and target.",
		}),
	}
	if err := metrics.Register(reg, "verify", m.rows, m.chunksMismatched); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) rowsRead(src, tgt int64) {
	if m == nil {
		return
	}
	m.rows.WithLabelValues("source").Add(float64(src))
	m.rows.WithLabelValues("target").Add(float64(tgt))
}

func (m *Metrics) mismatched(chunks int) {
	if m != nil {
		m.chunksMismatched.Add(float64(chunks))
	}
}
