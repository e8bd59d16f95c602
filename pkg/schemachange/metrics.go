package schemachange

import (
	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/metrics"
)

// Metrics are the schema-change metrics. Create them once per process
// with NewMetrics; they outlive the stream's reconnects.
type Metrics struct {
	Changes *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{Changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replicator_schema_changes_total",
		Help: "Schema changes seen on the source while streaming, by what was done: seen, applied (to the target, or found made there by hand), stopped (the stream stopped on it)."},
		[]string{"action"})}
	for _, a := range []string{"seen", ActionApplied, ActionStopped} {
		m.Changes.WithLabelValues(a) // exported as 0 before the first change
	}
	if err := metrics.Register(reg, "schema change", m.Changes); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) add(action string) {
	if m == nil {
		return
	}
	if action == ActionMatched {
		action = ActionApplied
	}
	m.Changes.WithLabelValues(action).Inc()
}
