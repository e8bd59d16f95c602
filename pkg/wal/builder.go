package wal

// TxnBuilder assembles a Txn from changes added one at a time, for capture
// sources other than logical decoding (trigger capture). It holds at most
// about memLimit bytes of changes in memory and spills the rest to a
// temporary file in dir, exactly as a decoded transaction does (spill.go),
// so a transaction of any size is built with bounded memory.
//
//	b := wal.NewTxnBuilder(dir, 8<<20)
//	for … { if err := b.Add(change); err != nil { b.Discard(); return err } }
//	txn := b.Txn()   // set its position fields (Commit, End); the caller closes it
type TxnBuilder struct {
	txn *Txn
}

// NewTxnBuilder starts an empty transaction. dir "" is the system's
// temporary directory; memLimit must be positive.
func NewTxnBuilder(dir string, memLimit int64) *TxnBuilder {
	return &TxnBuilder{txn: &Txn{buf: newChangeBuffer(dir, max(memLimit, 1))}}
}

// Add appends c. The builder keeps c and the slices it refers to (Old,
// New and their Text): the caller must not change them afterwards.
// Relations are kept by pointer and must stay the same object for one
// table within the transaction.
func (b *TxnBuilder) Add(c Change) error {
	b.txn.Count++
	b.txn.Bytes += c.size()
	return b.txn.buf.add(c)
}

// Count is the number of changes added so far.
func (b *TxnBuilder) Count() int { return b.txn.Count }

// Txn returns the transaction with every change added; the caller sets its
// position fields (XID, Commit, End, CommitTime) and closes it. The
// builder must not be used afterwards.
func (b *TxnBuilder) Txn() *Txn {
	t := b.txn
	b.txn = nil
	return t
}

// Discard deletes what was added (and its spill file). It may be called
// after Txn, when it does nothing.
func (b *TxnBuilder) Discard() error {
	if b.txn == nil {
		return nil
	}
	err := b.txn.Close()
	b.txn = nil
	return err
}
