package redissync

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// NewMetrics registers on the registry it is given and reports, instead
// of panicking, a registry that already holds the names; a failure leaves
// nothing of its own behind.
func TestNewMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.keyImported()
	m.keyImported()
	m.bytesImported(300)
	m.appliedOffset(1234)
	if n, err := testutil.GatherAndCount(reg, "replicator_redis_keys_imported_total"); err != nil || n != 1 {
		t.Fatalf("keys metric on the registry: %d series, %v", n, err)
	}
	if v := testutil.ToFloat64(m.KeysImported); v != 2 {
		t.Errorf("keys imported %v, want 2", v)
	}
	if v := testutil.ToFloat64(m.BytesImported); v != 300 {
		t.Errorf("bytes imported %v, want 300", v)
	}

	// A second set on the same registry is an error, and the first set is
	// still the one registered, with its values.
	var are prometheus.AlreadyRegisteredError
	if _, err := NewMetrics(reg); !errors.As(err, &are) {
		t.Fatalf("second NewMetrics on one registry: %v, want AlreadyRegisteredError", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			got[mf.GetName()] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	if got["replicator_redis_keys_imported_total"] != 2 || got["replicator_redis_follow_applied_offset"] != 1234 || len(got) != 5 {
		t.Errorf("registry after the refused second set: %v", got)
	}

	// When only the last name is taken, the ones registered before it are
	// removed again.
	reg = prometheus.NewRegistry()
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "replicator_redis_reconnects_total", Help: "someone else's"})
	reg.MustRegister(other)
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("NewMetrics succeeded on a registry holding one of its names")
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 1 || mfs[0].GetName() != "replicator_redis_reconnects_total" {
		t.Errorf("registry after a failed NewMetrics holds %d families (%v), want only the other collector", len(mfs), err)
	}
}

// A nil *Metrics records nothing and does not panic.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.keyImported()
	m.bytesImported(1)
	m.followLag(1)
	m.appliedOffset(1)
	m.reconnected()
}
