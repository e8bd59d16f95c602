package position

import (
	"cmp"
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
)

// Kind says what a Position counts.
type Kind uint8

// Kinds of positions. The zero Kind is the zero Position's.
const (
	KindNone        Kind = iota // no position
	KindLSN                     // source WAL position (logical capture)
	KindBatch                   // trigger capture changelog batch id
	KindChangelogID             // trigger capture changelog row id
	// A snapshot chunk is to be the next kind.
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindLSN:
		return "source LSN"
	case KindBatch:
		return "changelog batch"
	case KindChangelogID:
		return "changelog id"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Position is a point of a source's change stream. It is a small value:
// copy and compare it freely. Build it with LSN, Batch or ChangelogID;
// the zero value is no position.
type Position struct {
	kind Kind
	v    uint64
}

// LSN is the position of a source WAL address.
func LSN(l pglogrepl.LSN) Position { return Position{KindLSN, uint64(l)} }

// Batch is the position of trigger capture changelog batch id (ids count
// from 0, the copy's tick; they are never negative).
func Batch(id int64) Position { return Position{KindBatch, uint64(id)} }

// ChangelogID is the position of one changelog row (never negative).
func ChangelogID(id int64) Position { return Position{KindChangelogID, uint64(id)} }

// New is the position of kind k at v, as Kind and Uint64 give them back:
// for encodings of a position's own (spill files). KindNone gives the zero
// Position whatever v is.
func New(k Kind, v uint64) (Position, error) {
	switch k {
	case KindNone:
		return Position{}, nil
	case KindLSN, KindBatch, KindChangelogID:
		return Position{k, v}, nil
	}
	return Position{}, fmt.Errorf("position: unknown kind %d", uint8(k))
}

// ParseLSN reads PostgreSQL's pg_lsn text (e.g. 0/16B3748).
func ParseLSN(s string) (Position, error) {
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return Position{}, fmt.Errorf("position: %w", err)
	}
	return LSN(l), nil
}

// Kind is the position's kind; KindNone for the zero Position.
func (p Position) Kind() Kind { return p.kind }

// IsZero reports whether p is no position.
func (p Position) IsZero() bool { return p.kind == KindNone }

// LSN is the WAL address of an LSN position, 0 for any other kind.
func (p Position) LSN() pglogrepl.LSN {
	if p.kind != KindLSN {
		return 0
	}
	return pglogrepl.LSN(p.v)
}

// ID is the id of a batch or changelog row position, 0 for any other
// kind.
func (p Position) ID() int64 {
	if p.kind != KindBatch && p.kind != KindChangelogID {
		return 0
	}
	return int64(p.v)
}

// Uint64 is the position as a number, whatever its kind: an LSN's 64 bits
// or the id. It is what a gauge shows, and what differences within one
// kind are computed from (bytes of WAL, batches).
func (p Position) Uint64() uint64 { return p.v }

// Compare returns -1, 0 or +1 as p is before, at or after q. The answer
// means something only between positions of one kind; between kinds it
// orders by kind (the zero Position first), which keeps sorting total and
// nothing more.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.kind, q.kind); c != 0 {
		return c
	}
	return cmp.Compare(p.v, q.v)
}

// Less reports whether p is before q (see Compare).
func (p Position) Less(q Position) bool { return p.Compare(q) < 0 }

// String names the position for errors and logs: "source LSN 0/2A",
// "changelog batch 7", "changelog id 42", or "no position".
func (p Position) String() string {
	switch p.kind {
	case KindNone:
		return "no position"
	case KindLSN:
		return "source LSN " + pglogrepl.LSN(p.v).String()
	}
	return p.kind.String() + " " + strconv.FormatUint(p.v, 10)
}

// Range names the positions first..last of a run of changes, e.g.
// "source LSN 0/10..0/2A" or "changelog ids 3..9"; one position when
// they are equal or last is zero.
func Range(first, last Position) string {
	switch {
	case first == last || last.IsZero():
		return first.String()
	case first.kind != last.kind:
		return first.String() + ".." + last.String()
	case first.kind == KindLSN:
		return "source LSN " + first.LSN().String() + ".." + last.LSN().String()
	case first.kind == KindBatch:
		return fmt.Sprintf("changelog batches %d..%d", first.v, last.v)
	case first.kind == KindChangelogID:
		return fmt.Sprintf("changelog ids %d..%d", first.v, last.v)
	}
	return first.String() + ".." + last.String()
}

// Value stores the position as its column type expects (driver.Valuer):
// an LSN as pg_lsn text, an id as a bigint, no position as NULL.
func (p Position) Value() (driver.Value, error) {
	switch p.kind {
	case KindNone:
		return nil, nil
	case KindLSN:
		return pglogrepl.LSN(p.v).String(), nil
	case KindBatch, KindChangelogID:
		return int64(p.v), nil
	}
	return nil, fmt.Errorf("position: cannot store a position of %s", p.kind)
}

// Scan reads a position from a column (sql.Scanner): pg_lsn text is an
// LSN, NULL no position. An integer column says nothing of its kind, so
// p must have one before the scan, as in
//
//	applied := position.Batch(0)
//	err := row.Scan(&applied) // a bigint column of batch ids
func (p *Position) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*p = Position{}
		return nil
	case int64:
		return p.scanID(v)
	case int32:
		return p.scanID(int64(v))
	case []byte:
		return p.scanText(string(v))
	case string:
		return p.scanText(v)
	}
	return fmt.Errorf("position: cannot scan %T", src)
}

func (p *Position) scanText(s string) error {
	if strings.Contains(s, "/") {
		if p.kind != KindNone && p.kind != KindLSN {
			return fmt.Errorf("position: scan the LSN %s into a position of %s", s, p.kind)
		}
		q, err := ParseLSN(s)
		if err != nil {
			return err
		}
		*p = q
		return nil
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("position: %q is neither an LSN nor an id", s)
	}
	return p.scanID(id)
}

func (p *Position) scanID(id int64) error {
	if p.kind != KindBatch && p.kind != KindChangelogID {
		return fmt.Errorf("position: scan the integer %d into a position of %s: give it its kind first (position.Batch(0))", id, p.kind)
	}
	if id < 0 {
		return fmt.Errorf("position: negative %s %d", p.kind, id)
	}
	p.v = uint64(id)
	return nil
}
