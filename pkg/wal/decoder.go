package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"

	"replicator/pkg/position"
)

// ErrProtocol marks a pgoutput stream that does not follow the protocol
// (a change outside a transaction, an unknown relation). It is not
// retryable.
var ErrProtocol = errors.New("unexpected pgoutput message")

// decoder turns pgoutput protocol v1 messages into transactions. It follows
// https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html.
// Relation messages replace the earlier description every time they arrive
// (the source resends one after ALTER TABLE and at the start of every
// session), so a change is always read with the columns the source had
// when it was made.
type decoder struct {
	spillDir string
	memLimit int64

	rels map[uint32]*Relation
	cur  *Txn
}

func newDecoder(spillDir string, memLimit int64) *decoder {
	return &decoder{spillDir: spillDir, memLimit: memLimit, rels: map[uint32]*Relation{}}
}

// inTxn reports whether a transaction has begun and not yet committed.
func (d *decoder) inTxn() bool { return d.cur != nil }

// reset drops a half-received transaction (after a lost connection: the
// source sends it again from its beginning).
func (d *decoder) reset() {
	if d.cur != nil {
		d.cur.Close()
		d.cur = nil
	}
}

// feed decodes one message that started at WAL position at. It returns the
// transaction when the message completed one, else nil.
func (d *decoder) feed(at pglogrepl.LSN, data []byte) (t *Txn, err error) {
	// The parser indexes into the message without checking every length;
	// a malformed message is an error of this stream, not a crash.
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("%w: malformed message at %s: %v", ErrProtocol, at, r)
		}
	}()
	if err := checkCounts(data); err != nil {
		return nil, fmt.Errorf("%w: malformed message at %s: %v", ErrProtocol, at, err)
	}
	msg, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("decode pgoutput message at %s: %w", at, err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		if d.cur != nil {
			return nil, fmt.Errorf("%w: BEGIN of xid %d at %s inside xid %d", ErrProtocol, m.Xid, at, d.cur.XID)
		}
		d.cur = &Txn{XID: m.Xid, Commit: position.LSN(m.FinalLSN), CommitTime: m.CommitTime,
			buf: newChangeBuffer(d.spillDir, d.memLimit)}
	case *pglogrepl.CommitMessage:
		if d.cur == nil {
			return nil, fmt.Errorf("%w: COMMIT at %s outside a transaction", ErrProtocol, at)
		}
		t := d.cur
		d.cur = nil
		t.Commit, t.End, t.CommitTime = position.LSN(m.CommitLSN), position.LSN(m.TransactionEndLSN), m.CommitTime
		return t, nil
	case *pglogrepl.RelationMessage:
		r := &Relation{ID: m.RelationID, Namespace: m.Namespace, Name: m.RelationName,
			Identity: m.ReplicaIdentity, Columns: make([]Column, len(m.Columns))}
		for i, c := range m.Columns {
			r.Columns[i] = Column{Name: c.Name, Key: c.Flags&1 != 0}
		}
		d.rels[m.RelationID] = r
		if d.cur != nil {
			d.cur.Described = append(d.cur.Described, r)
		}
	case *pglogrepl.InsertMessage:
		return nil, d.add(at, m.RelationID, Insert, nil, m.Tuple)
	case *pglogrepl.UpdateMessage:
		return nil, d.add(at, m.RelationID, Update, m.OldTuple, m.NewTuple)
	case *pglogrepl.DeleteMessage:
		return nil, d.add(at, m.RelationID, Delete, m.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		if d.cur == nil {
			return nil, fmt.Errorf("%w: TRUNCATE at %s outside a transaction", ErrProtocol, at)
		}
		c := Change{Kind: Truncate, Pos: position.LSN(at), Cascade: m.Option&1 != 0, RestartIdentity: m.Option&2 != 0}
		for _, id := range m.RelationIDs {
			r, ok := d.rels[id]
			if !ok {
				return nil, fmt.Errorf("%w: TRUNCATE at %s of relation %d never described", ErrProtocol, at, id)
			}
			c.Truncated = append(c.Truncated, r)
		}
		return nil, d.push(c)
	default:
		// Origin, Type and logical decoding messages carry nothing to apply.
	}
	return nil, nil
}

// parse is pglogrepl.Parse with a workaround: pglogrepl's
// InsertMessage.Decode demands 8 bytes after the type byte, but an INSERT
// into a table with no published column (zero columns, or only generated
// ones, which pgoutput does not send) is 7: the relation id, 'N' and a
// column count of 0. pglogrepl refuses it ("InsertMessage must have 8
// bytes, got 7 bytes"), so every restart died on the same message. Such a
// message is decoded here; checkCounts has checked its layout. (Upstream
// bug in jackc/pglogrepl message.go, still present in v0.0.0-20251213;
// UPDATE and DELETE of zero columns are long enough for it.)
func parse(data []byte) (pglogrepl.Message, error) {
	if len(data) == 8 && data[0] == 'I' && data[5] == 'N' && binary.BigEndian.Uint16(data[6:]) == 0 {
		return &pglogrepl.InsertMessage{RelationID: binary.BigEndian.Uint32(data[1:5]), Tuple: &pglogrepl.TupleData{}}, nil
	}
	return pglogrepl.Parse(data)
}

// checkCounts refuses a message whose declared lengths it cannot hold:
// the parser allocates from a declared length before reading the bytes
// (a TRUNCATE's relation list, a column's value), so a hostile length would
// allocate gigabytes. Column counts are 16-bit and bound themselves.
// Protocol v1 layouts: 'T' count:u32 options:u8 ids:count×u32;
// 'I' rel:u32 'N' tuple; 'U' rel:u32 ['K'|'O' tuple] 'N' tuple;
// 'D' rel:u32 'K'|'O' tuple; tuple = n:u16, n × (kind:u8 ['t'|'b' len:u32 bytes]).
func checkCounts(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case 'T':
		if len(data) < 6 {
			return fmt.Errorf("TRUNCATE message of %d bytes is too short", len(data))
		}
		if n := uint64(binary.BigEndian.Uint32(data[1:5])); uint64(len(data)) < 6+4*n {
			return fmt.Errorf("TRUNCATE message declares %d relations in %d bytes", n, len(data))
		}
	case 'I', 'U', 'D':
		// The parser steps over the marker bytes without looking at them,
		// so the layout is checked here: a tuple read from the wrong offset
		// takes its lengths from arbitrary bytes.
		if len(data) < 6 {
			return fmt.Errorf("%c message of %d bytes is too short", data[0], len(data))
		}
		off := 5
		if data[0] != 'I' && (data[off] == 'K' || data[off] == 'O') {
			next, err := checkTuple(data, off+1)
			if err != nil {
				return fmt.Errorf("%c message, old tuple: %w", data[0], err)
			}
			if off = next; data[0] == 'D' {
				return nil
			}
		} else if data[0] == 'D' {
			return fmt.Errorf("DELETE message without an old tuple")
		}
		if off >= len(data) || data[off] != 'N' {
			return fmt.Errorf("%c message without its new tuple", data[0])
		}
		if _, err := checkTuple(data, off+1); err != nil {
			return fmt.Errorf("%c message, new tuple: %w", data[0], err)
		}
	}
	return nil
}

func checkTuple(data []byte, off int) (int, error) {
	if off+2 > len(data) {
		return off, fmt.Errorf("tuple cut short")
	}
	n := int(binary.BigEndian.Uint16(data[off:]))
	off += 2
	for i := 0; i < n; i++ {
		if off >= len(data) {
			return off, fmt.Errorf("tuple declares %d columns, holds %d", n, i)
		}
		kind := data[off]
		off++
		if kind != 't' && kind != 'b' {
			continue
		}
		if off+4 > len(data) {
			return off, fmt.Errorf("column %d length cut short", i)
		}
		l := uint64(binary.BigEndian.Uint32(data[off:]))
		off += 4
		if uint64(off)+l > uint64(len(data)) {
			return off, fmt.Errorf("column %d declares %d bytes, %d remain", i, l, len(data)-off)
		}
		off += int(l)
	}
	return off, nil
}

func (d *decoder) add(at pglogrepl.LSN, relID uint32, kind Kind, old, new *pglogrepl.TupleData) error {
	if d.cur == nil {
		return fmt.Errorf("%w: %s at %s outside a transaction", ErrProtocol, kind, at)
	}
	r, ok := d.rels[relID]
	if !ok {
		return fmt.Errorf("%w: %s at %s of relation %d never described", ErrProtocol, kind, at, relID)
	}
	c := Change{Kind: kind, Rel: r, Pos: position.LSN(at), Old: image(old), New: image(new)}
	return d.push(c)
}

func (d *decoder) push(c Change) error {
	d.cur.Count++
	d.cur.Bytes += c.size()
	if err := d.cur.buf.add(c); err != nil {
		return fmt.Errorf("xid %d at %s: %w", d.cur.XID, c.Pos.LSN(), err)
	}
	return nil
}

// image converts a tuple; the column data was copied out of the receive
// buffer by the parser, so it is owned here.
func image(t *pglogrepl.TupleData) []Value {
	if t == nil {
		return nil
	}
	img := make([]Value, len(t.Columns))
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			img[i] = Value{Kind: ValueText, Text: c.Data}
		case pglogrepl.TupleDataTypeToast:
			img[i] = Value{Kind: ValueUnchanged}
		default:
			img[i] = Value{Kind: ValueNull}
		}
	}
	return img
}
