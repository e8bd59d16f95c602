// Package metrics holds what every package's Prometheus metrics share:
// registering a package's collectors on the process's registry, all or
// none.
//
// Each package builds its collectors in a NewMetrics(reg) constructor that
// cmd/replicator calls once per process (postgres_exporter's
// collector-per-file style); the constructor ends with
//
//	return m, metrics.Register(reg, "snapshot", m.rows, m.bytes)
//
// A nil registry registers nothing, for tests that read collectors
// directly. A name registered twice is an error, never silently reused:
// metrics are built once and passed in.
package metrics
