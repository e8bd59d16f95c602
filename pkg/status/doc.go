// Package status gathers what `replicator status` shows a person or a
// script: snapshot progress, capture mode, how far the target has applied,
// how far behind the source it is (bytes and seconds), the slot's health on
// the source, and the last error. It reads the target's bookkeeping
// (schema replicator) and, when a source connection is given, the source's
// WAL position and slot.
//
//	st, err := status.Gather(ctx, target, source) // source may be nil
package status
