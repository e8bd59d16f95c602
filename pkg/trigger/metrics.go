package trigger

import (
	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/metrics"
)

// Metrics are trigger capture's Prometheus metrics. Build them once per
// process with NewMetrics and pass the same *Metrics to every Capture and
// Source (a reconnecting stream builds new ones); nil means no metrics.
type Metrics struct {
	// ChangelogRows is the rows in the source's changelog not yet purged.
	ChangelogRows prometheus.Gauge
	// CaptureLagSeconds is now minus the tick of the last batch the target
	// committed, both on the source's clock.
	CaptureLagSeconds prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, e.g. in tests that read the gauges directly).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		ChangelogRows: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_trigger_changelog_rows",
			Help: "Rows in the source's changelog not yet purged (refreshed at most every MetricsInterval)."}),
		CaptureLagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_trigger_capture_lag_seconds",
			Help: "Seconds between now and the tick closing the last batch the target committed (source clock)."}),
	}
	if err := metrics.Register(reg, "trigger capture", m.ChangelogRows, m.CaptureLagSeconds); err != nil {
		return nil, err
	}
	return m, nil
}
