package redissync

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the importer's Prometheus metrics. Build them with
// NewMetrics on the registry the command passes in.
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

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
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
	if reg != nil {
		reg.MustRegister(m.KeysImported, m.BytesImported, m.FollowLagBytes, m.FollowOffset, m.Reconnects)
	}
	return m
}
