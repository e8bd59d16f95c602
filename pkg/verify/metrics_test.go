package verify

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The counters are registered once per registry: a second registration
// is an error, not a silent reuse, and nil metrics count nothing.
func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering the verify metrics twice on one registry was not an error")
	}
	var m *Metrics
	m.rowsRead(1, 1)
	m.mismatched(1)
}
