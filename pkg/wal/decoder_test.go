package wal

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"replicator/pkg/position"
)

// Message builders following the pgoutput v1 formats byte by byte.

func u32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func u64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func u16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func cstr(b []byte, s string) []byte {
	return append(append(b, s...), 0)
}

var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func beginMsg(final uint64, xid uint32, at time.Time) []byte {
	b := []byte{'B'}
	b = u64(b, final)
	b = u64(b, uint64(at.Sub(pgEpoch).Microseconds()))
	return u32(b, xid)
}

func commitMsg(commit, end uint64, at time.Time) []byte {
	b := []byte{'C', 0}
	b = u64(b, commit)
	b = u64(b, end)
	return u64(b, uint64(at.Sub(pgEpoch).Microseconds()))
}

type col struct {
	name string
	key  bool
}

func relationMsg(id uint32, ns, name string, ident byte, cols ...col) []byte {
	b := u32([]byte{'R'}, id)
	b = cstr(b, ns)
	b = cstr(b, name)
	b = append(b, ident)
	b = u16(b, uint16(len(cols)))
	for _, c := range cols {
		flag := byte(0)
		if c.key {
			flag = 1
		}
		b = append(b, flag)
		b = cstr(b, c.name)
		b = u32(b, 25)
		b = u32(b, 0xFFFFFFFF)
	}
	return b
}

// tuple encodes values: nil is NULL, "\x00u" is unchanged TOAST.
func tuple(b []byte, vals ...*string) []byte {
	b = u16(b, uint16(len(vals)))
	for _, v := range vals {
		switch {
		case v == nil:
			b = append(b, 'n')
		case *v == "\x00u":
			b = append(b, 'u')
		default:
			b = append(b, 't')
			b = u32(b, uint32(len(*v)))
			b = append(b, *v...)
		}
	}
	return b
}

func s(v string) *string { return &v }

var unchanged = s("\x00u")

func TestDecoderTransaction(t *testing.T) {
	d := newDecoder(t.TempDir(), 1<<20)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	feed := func(m []byte) *Txn {
		t.Helper()
		txn, err := d.feed(0x100, m)
		if err != nil {
			t.Fatal(err)
		}
		return txn
	}
	feed(beginMsg(0x500, 77, at))
	feed(relationMsg(16384, "App", "My Table", 'd', col{"id", true}, col{"big", false}, col{"n", false}))
	feed(append(u32([]byte{'I'}, 16384), tuple([]byte{'N'}, s("1"), s("x"), nil)...))
	// UPDATE that changed the key: old key ('K') then new tuple with an
	// unchanged TOAST value.
	upd := u32([]byte{'U'}, 16384)
	upd = tuple(append(upd, 'K'), s("1"), nil, nil)
	upd = tuple(append(upd, 'N'), s("2"), unchanged, s("5"))
	feed(upd)
	feed(append(u32([]byte{'D'}, 16384), tuple([]byte{'K'}, s("2"), nil, nil)...))
	tr := []byte{'T'}
	tr = u32(tr, 1)
	tr = append(tr, 3) // CASCADE | RESTART IDENTITY
	tr = u32(tr, 16384)
	feed(tr)
	if !d.inTxn() {
		t.Fatal("decoder not in a transaction after BEGIN")
	}
	txn := feed(commitMsg(0x500, 0x540, at))
	if txn == nil {
		t.Fatal("COMMIT did not complete the transaction")
	}
	defer txn.Close()
	if txn.XID != 77 || txn.Commit != position.LSN(0x500) || txn.End != position.LSN(0x540) || !txn.CommitTime.Equal(at) || txn.Count != 4 {
		t.Fatalf("transaction %+v", txn)
	}
	var got []Change
	txn.Each(func(c *Change) error { got = append(got, *c); return nil })
	if len(got) != 4 {
		t.Fatalf("%d changes, want 4", len(got))
	}
	rel := got[0].Rel
	if rel.String() != "App.My Table" || rel.Identity != IdentityDefault || !rel.Columns[0].Key || rel.Columns[1].Key {
		t.Fatalf("relation %+v", rel)
	}
	if got[0].Kind != Insert || string(got[0].New[1].Text) != "x" || got[0].New[2].Kind != ValueNull {
		t.Errorf("insert %+v", got[0])
	}
	if got[1].Kind != Update || string(got[1].Old[0].Text) != "1" || got[1].New[1].Kind != ValueUnchanged || got[1].KeyString() != "(id)=(1)" {
		t.Errorf("update %+v key %s", got[1], got[1].KeyString())
	}
	if got[2].Kind != Delete || got[2].KeyString() != "(id)=(2)" {
		t.Errorf("delete %+v", got[2])
	}
	if got[3].Kind != Truncate || !got[3].Cascade || !got[3].RestartIdentity || got[3].Truncated[0] != rel {
		t.Errorf("truncate %+v", got[3])
	}
}

func TestDecoderRelationReplaced(t *testing.T) {
	d := newDecoder(t.TempDir(), 1<<20)
	d.feed(1, beginMsg(9, 1, pgEpoch))
	d.feed(2, relationMsg(5, "public", "t", 'd', col{"id", true}))
	d.feed(3, append(u32([]byte{'I'}, 5), tuple([]byte{'N'}, s("1"))...))
	d.feed(4, relationMsg(5, "public", "t", 'f', col{"id", true}, col{"added", true}))
	d.feed(5, append(u32([]byte{'I'}, 5), tuple([]byte{'N'}, s("2"), s("a"))...))
	txn, err := d.feed(6, commitMsg(9, 10, pgEpoch))
	if err != nil || txn == nil {
		t.Fatal(txn, err)
	}
	var rels []*Relation
	txn.Each(func(c *Change) error { rels = append(rels, c.Rel); return nil })
	if len(rels[0].Columns) != 1 || len(rels[1].Columns) != 2 || rels[1].Identity != IdentityFull {
		t.Fatalf("a change was not read with the relation as described when it was made: %+v %+v", rels[0], rels[1])
	}
}

func TestDecoderProtocolErrors(t *testing.T) {
	for name, msgs := range map[string][][]byte{
		"insert outside a transaction": {relationMsg(1, "p", "t", 'd', col{"a", true}), append(u32([]byte{'I'}, 1), tuple([]byte{'N'}, s("1"))...)},
		"unknown relation":             {beginMsg(1, 1, pgEpoch), append(u32([]byte{'I'}, 99), tuple([]byte{'N'}, s("1"))...)},
		"commit outside a transaction": {commitMsg(1, 2, pgEpoch)},
		"nested begin":                 {beginMsg(1, 1, pgEpoch), beginMsg(2, 2, pgEpoch)},
		"truncated tuple":              {beginMsg(1, 1, pgEpoch), relationMsg(1, "p", "t", 'd', col{"a", true}), append(u32([]byte{'I'}, 1), 'N', 0, 1, 't', 0, 0, 0, 9)},
	} {
		d := newDecoder(t.TempDir(), 1<<20)
		var err error
		for _, m := range msgs {
			if _, err = d.feed(1, m); err != nil {
				break
			}
		}
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !errors.Is(err, ErrProtocol) && name != "truncated tuple" {
			t.Errorf("%s: %v is not ErrProtocol", name, err)
		}
		d.reset()
	}
}

// TestSpillRoundTrip: changes past the memory bound go to a file, read
// back identical and in order, any number of times; Close deletes it.
func TestSpillRoundTrip(t *testing.T) {
	dir := t.TempDir()
	d := newDecoder(dir, 4096)
	d.feed(1, beginMsg(9, 1, pgEpoch))
	d.feed(2, relationMsg(5, "public", "t", 'f', col{"id", true}, col{"v", true}))
	var want []Change
	for i := 0; i < 2000; i++ {
		v := s(string(rune('a' + i%26)))
		if i%3 == 0 {
			v = nil
		}
		m := append(u32([]byte{'I'}, 5), tuple([]byte{'N'}, s(string(rune('0'+i%10))), v)...)
		if i%5 == 0 {
			m = u32([]byte{'U'}, 5)
			m = tuple(append(m, 'O'), s("1"), nil)
			m = tuple(append(m, 'N'), s("1"), unchanged)
		}
		if _, err := d.feed(pglogrepl.LSN(100+i), m); err != nil {
			t.Fatal(err)
		}
	}
	txn, err := d.feed(3, commitMsg(9, 10, pgEpoch))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.spill"))
	if len(files) != 1 {
		t.Fatalf("spill files %v, want one", files)
	}
	if txn.buf.inMemory() > 4096+512 {
		t.Errorf("%d bytes held in memory with a 4096-byte bound", txn.buf.inMemory())
	}
	for pass := 0; pass < 2; pass++ {
		var got []Change
		txn.Each(func(c *Change) error { got = append(got, *c); return nil })
		if len(got) != 2000 {
			t.Fatalf("pass %d: %d changes, want 2000", pass, len(got))
		}
		for i, c := range got {
			if c.Pos != position.LSN(pglogrepl.LSN(100+i)) {
				t.Fatalf("pass %d: change %d is at %s: out of order", pass, i, c.Pos)
			}
			if i%5 == 0 {
				if c.Kind != Update || c.New[1].Kind != ValueUnchanged || c.Old[1].Kind != ValueNull {
					t.Fatalf("change %d: %+v", i, c)
				}
			} else if string(c.New[0].Text) != string(rune('0'+i%10)) || (i%3 == 0) != (c.New[1].Kind == ValueNull) {
				t.Fatalf("change %d: %+v", i, c)
			}
			if c.Rel.Name != "t" || c.Rel.Identity != IdentityFull {
				t.Fatalf("change %d relation %+v", i, c.Rel)
			}
		}
		if pass == 0 {
			want = got
		} else if !reflect.DeepEqual(want, got) {
			t.Fatal("a second read differs from the first")
		}
	}
	txn.Close()
	if _, err := os.Stat(files[0]); !os.IsNotExist(err) {
		t.Errorf("spill file %s still there after Close", files[0])
	}
}

// FuzzDecoder: no message sequence crashes the decoder.
func FuzzDecoder(f *testing.F) {
	f.Add(beginMsg(1, 1, pgEpoch), relationMsg(1, "p", "t", 'd', col{"a", true}), append(u32([]byte{'I'}, 1), tuple([]byte{'N'}, s("1"))...))
	f.Add(beginMsg(1, 1, pgEpoch), relationMsg(1, "p", "t", 'f', col{"a", true}), tuple(append(u32([]byte{'U'}, 1), 'O'), s("x")))
	f.Add(beginMsg(1, 1, pgEpoch), relationMsg(1, "p", "empty", 'f'), append(u32([]byte{'I'}, 1), tuple([]byte{'N'})...))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			d := newDecoder(t.TempDir(), 64)
			for _, m := range [][]byte{a, b, c, commitMsg(1, 2, pgEpoch)} {
				txn, err := d.feed(1, m)
				if err == nil && txn != nil {
					txn.Each(func(*Change) error { return nil })
					txn.Close()
				}
			}
			d.reset()
		}()
		// A message sequence that does not finish is a hang, reported with
		// its input rather than stalling the fuzzer.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("decoding %q, %q, %q did not finish in 5 s", a, b, c)
		}
	})
}

// TestDecoderZeroColumnTuples: a table with no published column (zero
// columns, or only generated ones) sends 7-byte INSERTs that pglogrepl
// refuses on its own; each must still arrive as one row change, as must
// an UPDATE and a DELETE of such a row under REPLICA IDENTITY FULL.
func TestDecoderZeroColumnTuples(t *testing.T) {
	d := newDecoder(t.TempDir(), 1<<20)
	msgs := [][]byte{
		beginMsg(9, 1, pgEpoch),
		relationMsg(7, "public", "empty", 'f'),
		append(u32([]byte{'I'}, 7), tuple([]byte{'N'})...),
		append(u32([]byte{'I'}, 7), tuple([]byte{'N'})...),
		tuple(append(tuple(append(u32([]byte{'U'}, 7), 'O')), 'N')),
		append(u32([]byte{'D'}, 7), tuple([]byte{'O'})...),
	}
	if n := len(msgs[2]); n != 8 {
		t.Fatalf("a zero-column INSERT is %d bytes, want 8 (type byte included)", n)
	}
	for i, m := range msgs {
		if _, err := d.feed(pglogrepl.LSN(i+1), m); err != nil {
			t.Fatalf("message %d (%c): %v", i, m[0], err)
		}
	}
	txn, err := d.feed(10, commitMsg(9, 10, pgEpoch))
	if err != nil || txn == nil {
		t.Fatal(txn, err)
	}
	defer txn.Close()
	var kinds []Kind
	txn.Each(func(c *Change) error {
		if c.Rel.Name != "empty" || len(c.New)+len(c.Old) != 0 {
			t.Errorf("change %+v", c)
		}
		kinds = append(kinds, c.Kind)
		return nil
	})
	if !reflect.DeepEqual(kinds, []Kind{Insert, Insert, Update, Delete}) {
		t.Fatalf("changes %v, want two inserts, an update and a delete", kinds)
	}
	// An insert cut short is still an error, not a zero-column row.
	if _, err := newDecoder(t.TempDir(), 1<<20).feed(1, []byte{'I', 0, 0, 0, 7, 'N', 0}); err == nil {
		t.Error("a 7-byte INSERT was accepted")
	}
}
