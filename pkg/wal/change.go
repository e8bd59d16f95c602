package wal

import (
	"context"
	"fmt"
	"time"

	"replicator/pkg/position"
)

// Kind is what a change does to a row.
type Kind byte

// Change kinds, with the letters pgoutput uses.
const (
	Insert   Kind = 'I'
	Update   Kind = 'U'
	Delete   Kind = 'D'
	Truncate Kind = 'T'
)

func (k Kind) String() string {
	switch k {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Replica identity settings of a source table (pg_class.relreplident).
const (
	IdentityDefault = 'd' // primary key
	IdentityIndex   = 'i' // a chosen unique index
	IdentityFull    = 'f' // the whole old row
	IdentityNothing = 'n' // no identity: UPDATE/DELETE cannot be located
)

// Column is one column of a source relation as last described by the
// source.
type Column struct {
	Name string
	Key  bool // part of the replica identity (every column under FULL)
}

// Relation is a source table as described by the source at one point of
// the stream. A Relation is immutable: a new description (after ALTER
// TABLE, or a reconnect) is a new *Relation with the same ID.
type Relation struct {
	ID        uint32
	Namespace string
	Name      string
	Identity  byte // IdentityDefault, IdentityIndex, IdentityFull or IdentityNothing
	Columns   []Column
}

// String is the quoted-if-needed qualified name, for errors and metrics.
func (r *Relation) String() string { return r.Namespace + "." + r.Name }

// Value kinds of one column in a row image.
const (
	ValueNull      byte = 'n'
	ValueText      byte = 't'
	ValueUnchanged byte = 'u' // unchanged TOASTed value: not sent, must not be overwritten
)

// Value is one column of a row image, in the source's text output format.
// Text is nil unless Kind is ValueText.
type Value struct {
	Kind byte
	Text []byte
}

// Change is one row change (or a TRUNCATE of one or more tables).
//
// For Insert, New is the row. For Update, New is the new row (columns of
// Kind ValueUnchanged were not sent and keep their value) and Old is the
// old key (identity index) or old row (REPLICA IDENTITY FULL) when the
// source sent one, else nil: then the key is in New. For Delete, Old is
// the key or the full old row. Values are indexed like Rel.Columns.
type Change struct {
	Kind Kind
	Rel  *Relation
	Old  []Value
	New  []Value
	// Pos is where the change is on the source, named in errors: its WAL
	// position under logical capture, its changelog id under trigger
	// capture.
	Pos position.Position
	// XID is the source transaction's top-level xid8 when the capture
	// knows it per change (trigger capture, whose Txn is a batch of many
	// source transactions); 0 when the Txn's XID is the transaction's.
	XID uint64
	// Partition is the qualified name of the partition of Rel the row was
	// written to, when the capture records changes under the partitioned
	// root (trigger capture) and knows it; "" otherwise. Apply writes to
	// Rel; the chunked copy's filter judges by the partition's chunks.
	Partition string

	// Truncate only: the tables, and TRUNCATE's options.
	Truncated       []*Relation
	Cascade         bool
	RestartIdentity bool
}

// Identity returns the row image that locates the row on the target: the
// old key or old row when sent, else the new row (whose identity columns
// did not change).
func (c *Change) Identity() []Value {
	if c.Old != nil {
		return c.Old
	}
	return c.New
}

// KeyString describes the change's identity columns for error messages,
// e.g. (id)=(42). Values longer than 64 bytes are cut.
func (c *Change) KeyString() string {
	if c.Rel == nil {
		return ""
	}
	img := c.Identity()
	var names, vals string
	for i, col := range c.Rel.Columns {
		if !col.Key || i >= len(img) {
			continue
		}
		if names != "" {
			names += ", "
			vals += ", "
		}
		names += col.Name
		switch img[i].Kind {
		case ValueNull:
			vals += "NULL"
		case ValueUnchanged:
			vals += "(unchanged)"
		default:
			v := string(img[i].Text)
			if len(v) > 64 {
				v = v[:64] + "…"
			}
			vals += v
		}
	}
	return "(" + names + ")=(" + vals + ")"
}

// size is an estimate of the memory a change holds, for the memory bounds.
func (c *Change) size() int64 {
	n := int64(96)
	for _, v := range c.Old {
		n += 16 + int64(len(v.Text))
	}
	for _, v := range c.New {
		n += 16 + int64(len(v.Text))
	}
	return n + int64(8*len(c.Truncated))
}

// Txn is one committed source transaction, delivered whole and in commit
// order. Its changes may be held partly on disk (see spill.go); read them
// with Each, as often as needed, until Close.
//
// A Txn with no changes and Heartbeat set carries only a position: the
// source confirmed that nothing needing apply happened up to End.
//
// Positions are built by the source: logical capture gives WAL positions
// (position.LSN); trigger capture (trigger.Source) delivers one changelog
// batch per Txn, whose Commit and End are the batch (position.Batch),
// CommitTime the time of the tick that closed the batch, and each
// change's Pos its changelog id.
type Txn struct {
	XID        uint32
	Commit     position.Position // the commit record
	End        position.Position // end of the commit record: the position to record and confirm
	CommitTime time.Time         // zero for a logical heartbeat
	Heartbeat  bool

	Count int   // changes in the transaction
	Bytes int64 // estimated size of the changes

	// Described are the relations the source described inside this
	// transaction (pgoutput RELATION messages), in order. The source sends
	// one before the first change of a relation in each session and after
	// every change of its shape (ALTER TABLE), before the first row change
	// that needs the new shape: the schema-change handler reads them to
	// order an ADD COLUMN exactly before that change. nil under trigger
	// capture.
	Described []*Relation

	buf *changeBuffer
}

// Each calls fn for every change in order. fn must not keep the *Change or
// its values after it returns. Each may be called again to re-read.
func (t *Txn) Each(fn func(*Change) error) error {
	if t.buf == nil {
		return nil
	}
	return t.buf.each(fn)
}

// Close releases the transaction's memory and deletes its spill file. It
// may be repeated.
func (t *Txn) Close() error {
	if t.buf == nil {
		return nil
	}
	err := t.buf.close()
	t.buf = nil
	return err
}

// Source is a capture source: logical decoding (this package) or trigger
// capture. The apply stage pulls transactions from it, records their
// positions on the target itself (pkg/state), and reports back what the
// target has committed.
//
// Next and Poll are called from one goroutine (the apply stage's), in any
// interleaving. Each Txn they return belongs to the caller, who closes it
// (after Committed, or when it is dropped). Once capture has stopped on an
// error, the transactions received before it are delivered first, then
// every further call returns that error again.
type Source interface {
	// Next blocks until the next transaction in commit order is complete
	// and returns it. It returns ctx.Err() when ctx ends first, or the
	// error that stopped capture; never a nil Txn with a nil error.
	Next(ctx context.Context) (*Txn, error)
	// Poll returns the next transaction if it is complete now, without
	// waiting: (nil, nil) when none is ready, or the error that stopped
	// capture. It may be called any number of times.
	Poll() (*Txn, error)
	// Committed tells the source that every transaction up to and
	// including txn is committed on the target, so the source may release
	// it. It does not block and is safe to call from any goroutine.
	Committed(txn *Txn)
}
