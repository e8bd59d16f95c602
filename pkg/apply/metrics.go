package apply

import (
	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/metrics"
)

// Metrics are the stream's Prometheus metrics. Create them once per
// process with NewMetrics and pass them in (StreamConfig.Metrics,
// NewApplier); they outlive reconnects.
type Metrics struct {
	SourceLagBytes      prometheus.Gauge
	ApplyLagSeconds     prometheus.Gauge
	AppliedTransactions prometheus.Counter
	AppliedChanges      *prometheus.CounterVec
	BatchChanges        prometheus.Histogram
	LastAppliedLSN      prometheus.Gauge
	LastAppliedBatch    prometheus.Gauge // trigger capture's position
	StreamErrors        *prometheus.CounterVec
	ApplyRetries        *prometheus.CounterVec // by SQLSTATE: 40P01 deadlock, 40001 serialization failure
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newMetrics()
	if err := metrics.Register(reg, "stream", m.SourceLagBytes, m.ApplyLagSeconds, m.AppliedTransactions, m.AppliedChanges, m.BatchChanges, m.LastAppliedLSN, m.LastAppliedBatch, m.StreamErrors, m.ApplyRetries); err != nil {
		return nil, err
	}
	return m, nil
}

// newMetrics creates the metrics, unregistered.
func newMetrics() *Metrics {
	m := &Metrics{
		SourceLagBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_source_lag_bytes",
			Help: "Bytes of source WAL not yet applied to the target (source WAL end minus applied position)."}),
		ApplyLagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_apply_lag_seconds",
			Help: "Seconds between now and the source commit time of the last applied transaction; 0 when idle and caught up."}),
		AppliedTransactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_applied_transactions_total",
			Help: "Source transactions applied to the target."}),
		AppliedChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replicator_applied_changes_total",
			Help: "Row changes applied to the target, by table and operation."}, []string{"table", "op"}),
		BatchChanges: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "replicator_apply_batch_changes",
			Help:    "Changes per target transaction (one target transaction groups many source transactions).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		LastAppliedLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_last_applied_lsn",
			Help: "Source position (LSN as a number) of the last transaction committed on the target."}),
		LastAppliedBatch: prometheus.NewGauge(prometheus.GaugeOpts{Name: "replicator_trigger_last_applied_batch",
			Help: "Trigger capture: id of the last changelog batch committed on the target."}),
		StreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replicator_stream_errors_total",
			Help: "Errors that stopped or restarted the stream, by stage (capture, apply, connect)."}, []string{"stage"}),
		ApplyRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replicator_apply_retries_total",
			Help: "Target transactions rolled back after losing a lock conflict with another session and applied again, by SQLSTATE (40P01 deadlock, 40001 serialization failure)."}, []string{"sqlstate"}),
	}
	for _, stage := range []string{"connect", "capture", "apply"} {
		m.StreamErrors.WithLabelValues(stage) // exported as 0 before the first error
	}
	for _, code := range retriedCodes {
		m.ApplyRetries.WithLabelValues(code)
	}
	return m
}
