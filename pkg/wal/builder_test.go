package wal

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"replicator/pkg/position"
)

// TestTxnBuilderSpills: a transaction built change by change past its
// memory bound goes to a spill file, reads back complete and in order, and
// Close (or Discard) deletes the file. Positions of any kind survive the
// spill file.
func TestTxnBuilderSpills(t *testing.T) {
	dir := t.TempDir()
	rel := &Relation{ID: 1, Namespace: "public", Name: "t", Identity: IdentityDefault,
		Columns: []Column{{Name: "id", Key: true}, {Name: "v"}}}
	b := NewTxnBuilder(dir, 2048)
	for i := 0; i < 1000; i++ {
		c := Change{Kind: Insert, Rel: rel, Pos: position.ChangelogID(int64(i)), New: []Value{{Kind: ValueText, Text: []byte(strconv.Itoa(i))}, {Kind: ValueNull}}}
		if i%2 == 1 {
			c = Change{Kind: Update, Rel: rel, Pos: position.ChangelogID(int64(i)), Old: []Value{{Kind: ValueText, Text: []byte(strconv.Itoa(i - 1))}, {Kind: ValueUnchanged}},
				New: []Value{{Kind: ValueText, Text: []byte(strconv.Itoa(i - 1))}, {Kind: ValueUnchanged}}}
		}
		c.XID = 1<<32 + uint64(i) // trigger capture's per-change xid8 survives the spill
		if err := b.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	txn := b.Txn()
	if txn.Count != 1000 {
		t.Fatalf("count %d, want 1000", txn.Count)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.spill"))
	if len(files) != 1 {
		t.Fatalf("spill files %v, want one", files)
	}
	i := 0
	err := txn.Each(func(c *Change) error {
		want := strconv.Itoa(i - i%2)
		if string(c.New[0].Text) != want || (i%2 == 1) != (c.Kind == Update) || c.Rel != rel || c.Pos != position.ChangelogID(int64(i)) || c.XID != 1<<32+uint64(i) {
			t.Fatalf("change %d: %+v", i, c)
		}
		i++
		return nil
	})
	if err != nil || i != 1000 {
		t.Fatalf("read %d changes: %v", i, err)
	}
	txn.Close()
	if _, err := os.Stat(files[0]); !os.IsNotExist(err) {
		t.Errorf("spill file still there after Close")
	}

	d := NewTxnBuilder(dir, 64)
	for i := 0; i < 100; i++ {
		d.Add(Change{Kind: Insert, Rel: rel, New: []Value{{Kind: ValueText, Text: []byte("x")}, {Kind: ValueNull}}})
	}
	d.Discard()
	if files, _ := filepath.Glob(filepath.Join(dir, "*.spill")); len(files) != 0 {
		t.Errorf("Discard left %v", files)
	}
}
