package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegisterAllOrNone(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	if err := Register(reg, "first", a, b); err != nil {
		t.Fatal(err)
	}
	a.Add(3)
	if n, err := testutil.GatherAndCount(reg, "a_total", "b_total"); err != nil || n != 2 {
		t.Fatalf("registered %d metrics (%v), want 2", n, err)
	}

	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "c_total", Help: "c"})
	dupB := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	err := Register(reg, "second", c, dupB)
	if err == nil || !strings.Contains(err.Error(), "register the second metrics") {
		t.Fatalf("registering a name twice: %v, want an error naming the set", err)
	}
	if n, _ := testutil.GatherAndCount(reg, "c_total"); n != 0 {
		t.Errorf("c_total stayed registered after its set failed")
	}
	if got := testutil.ToFloat64(a); got != 3 {
		t.Errorf("the first set's counter reads %v, want 3", got)
	}
	if err := Register(nil, "none", c); err != nil {
		t.Errorf("nil registry: %v", err)
	}
}
