// Package status gathers what `replicator status` shows a person or a
// script: snapshot progress, capture mode, how far the target has applied,
// how far behind the source it is (logical: WAL bytes; trigger: changelog
// rows the applied tick does not cover; both: seconds), the slot's health
// on the source, and the last error. Positions read as pkg/position names
// them. It reads the target's bookkeeping (schema replicator) and, when a
// source connection is given, the source's WAL position and slot or its
// changelog and ticks.
//
//	st, err := status.Gather(ctx, target, source) // source may be nil
//	st.WriteMarkdown(w, report.Header{Version: v})  // for a change ticket
package status
