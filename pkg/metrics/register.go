package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers every collector on reg, or none: when reg refuses one
// (typically because a metric of that name is registered already), those
// registered before it are unregistered again and the error names what
// (e.g. "snapshot"). A nil reg registers nothing and returns nil.
func Register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register the %s metrics: %w", what, err)
		}
	}
	return nil
}
