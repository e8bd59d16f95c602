// Package wal owns change capture: it reads a pgoutput logical replication
// slot (protocol version 1, text values, publication_names) with
// jackc/pglogrepl and yields committed source transactions, in commit
// order, as row changes: the relation as last described, the kind, the old
// key or row, the new values, and which columns are unchanged TOAST.
//
// It follows the logical replication message formats of
// https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
// and the streaming replication protocol's keepalive and standby status
// messages. Positions: the flush position reported to the source is the
// end LSN of the last transaction the target committed (Committed), never
// what was merely received; when everything received is applied, the
// keepalive's position is passed to apply as a heartbeat so an idle source
// does not retain WAL.
//
// Large transactions are spilled to a temporary file past a memory bound
// (spill.go). Trigger capture feeds the same apply through Source
// (trigger.Source), building its transactions with NewTxnBuilder, which
// spills the same way.
//
// Positions are position.Position values: a Txn's Commit and End and a
// Change's Pos are LSNs here; trigger capture fills the same fields with
// its batch and changelog ids, so apply never needs to know which source
// it reads.
//
//	src, err := wal.OpenLogical(ctx, wal.Config{SourceURL: url, Slot: "replicator",
//		Publication: "replicator", Start: lsn}, log)
//	defer src.Close()
//	for {
//		txn, err := src.Next(ctx) // or src.Poll() to take only what is ready
//		// apply txn.Each(...), state.RecordApplied(ctx, tx, txn.End, …), commit, then:
//		src.Committed(txn)
//		txn.Close()
//	}
package wal
