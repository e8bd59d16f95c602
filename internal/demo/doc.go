// Package demo runs the whole migration on throwaway local servers, for
// `replicator demo` (and `make demo`): it starts a source and a target
// PostgreSQL and Redis, seeds a realistic application (internal/demoapp)
// and a Redis cache, keeps a load generator writing to both throughout,
// then audits, snapshots, streams, follows, and verifies, printing each
// step and ending with the verification reports and the lag the stream
// held under load.
//
// The components' log lines join the narrative through NarrativeCore:
// one readable line each ("      warning: …"), on a terminal as in a
// pipe, never JSON.
//
//	log := zap.New(demo.NarrativeCore(os.Stdout, zap.WarnLevel))
//	identical, err := demo.Run(ctx, demo.Options{Out: os.Stdout, Log: log})
package demo
