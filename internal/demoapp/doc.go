// Package demoapp is a small but realistic Rails-style application
// database used by `replicator demo` and by benchmarks: users, products,
// orders and their items, a range-partitioned events table, an audit log
// without a primary key, documents with large TOASTed bodies, and the
// awkward types real schemas carry (enums, citext, jsonb, arrays, bytea,
// numeric). Seed fills it; Load writes to it like a live app until stopped.
//
//	if err := demoapp.Seed(ctx, url, demoapp.Size{Users: 10000}); err != nil { ... }
//	stats, err := demoapp.Load(ctx, url, 200) // ~200 write transactions a second until ctx ends
package demoapp
