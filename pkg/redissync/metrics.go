package redissync

import (
	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/metrics"
)

// Metrics are the sync's Prometheus metrics. The command builds them once
// per process with NewMetrics, on the registry it serves, and passes them
// in SyncConfig.Metrics. A nil *Metrics records nothing.
type Metrics struct {
	KeysImported   prometheus.Counter
	BytesImported  prometheus.Counter
	FollowLagBytes prometheus.Gauge
	// FollowOffset is the source replication offset applied to the target
	// (outside MULTI): compare it with the source's master_repl_offset to
	// know the target has caught up.
	FollowOffset prometheus.Gauge
	Reconnects   prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg; with a nil reg
// they are created unregistered (a test reads them directly). It fails when
// reg refuses one of them, typically because metrics of that name are
// registered already, and then leaves none of them registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		KeysImported: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_redis_keys_imported_total",
			Help: "Keys written to the target Redis by the snapshot (RESTORE or native commands)."}),
		BytesImported: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_redis_bytes_imported_total",
			Help: "Payload bytes written to the target Redis (snapshot and follow)."}),
		FollowLagBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_redis_follow_lag_bytes",
			Help: "Replication stream bytes received from the source but not yet applied to the target."}),
		FollowOffset: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_redis_follow_applied_offset",
			Help: "Source replication offset applied to the target; the source's master_repl_offset minus this is how far behind the target is."}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_redis_reconnects_total",
			Help: "Reconnections to the source Redis after a dropped replication link."}),
	}
	if err := metrics.Register(reg, "redis sync", m.KeysImported, m.BytesImported, m.FollowLagBytes, m.FollowOffset, m.Reconnects); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) keyImported() {
	if m != nil {
		m.KeysImported.Inc()
	}
}

func (m *Metrics) bytesImported(n int64) {
	if m != nil {
		m.BytesImported.Add(float64(n))
	}
}

// imported counts keys and bytes written to the target.
func (m *Metrics) imported(keys, bytes int64) {
	if m != nil {
		m.KeysImported.Add(float64(keys))
		m.BytesImported.Add(float64(bytes))
	}
}

func (m *Metrics) followLag(n int64) {
	if m != nil {
		m.FollowLagBytes.Set(float64(n))
	}
}

func (m *Metrics) appliedOffset(off int64) {
	if m != nil {
		m.FollowOffset.Set(float64(off))
	}
}

func (m *Metrics) reconnected() {
	if m != nil {
		m.Reconnects.Inc()
	}
}
