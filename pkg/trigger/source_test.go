package trigger

import (
	"testing"

	"replicator/pkg/position"
	"replicator/pkg/wal"
)

func tv(s string) Value { return Value{Kind: ValueText, Text: []byte(s)} }

var unch = Value{Kind: ValueUnchanged}

// convert gives apply the shapes pgoutput gives it: an unchanged key goes
// into New and Old stays nil; a changed key is sent as Old; without a key
// Old is the whole old row; a column not in an UPDATE stays unchanged.
func TestConvertShapes(t *testing.T) {
	keyed := &Table{ID: 1, Namespace: "public", Name: "t", Identity: 'd',
		Columns: []Column{{Name: "id", Key: true}, {Name: "v"}, {Name: "big"}}}
	keyless := &Table{ID: 2, Namespace: "public", Name: "nopk", Identity: 'f',
		Columns: []Column{{Name: "a", Key: true}, {Name: "b", Key: true}}}
	s := &Source{rels: map[*Table]*wal.Relation{}}

	c, err := s.convert(&Change{ID: 7, Op: Update, Table: keyed, Key: []Value{tv("1"), unch, unch}, New: []Value{unch, tv("x"), unch}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != wal.Update || c.Old != nil || string(c.New[0].Text) != "1" || string(c.New[1].Text) != "x" ||
		c.New[2].Kind != wal.ValueUnchanged || c.Pos != position.ChangelogID(7) || c.Rel.Identity != wal.IdentityDefault || !c.Rel.Columns[0].Key {
		t.Errorf("update with unchanged key: %+v", c)
	}

	c, _ = s.convert(&Change{Op: Update, Table: keyed, Key: []Value{tv("1"), unch, unch}, New: []Value{tv("2"), unch, unch}})
	if c.Old == nil || string(c.Old[0].Text) != "1" || string(c.New[0].Text) != "2" {
		t.Errorf("update of the key: %+v", c)
	}

	c, _ = s.convert(&Change{Op: Update, Table: keyless, Key: []Value{tv("1"), tv("p")}, New: []Value{unch, tv("q")}})
	if c.Old == nil || string(c.Old[1].Text) != "p" || string(c.New[0].Text) != "1" || string(c.New[1].Text) != "q" ||
		c.Rel.Identity != wal.IdentityFull {
		t.Errorf("update without a key: %+v", c)
	}

	c, _ = s.convert(&Change{Op: Delete, Table: keyed, Key: []Value{tv("3"), unch, unch}})
	if c.Kind != wal.Delete || c.New != nil || string(c.Old[0].Text) != "3" {
		t.Errorf("delete: %+v", c)
	}

	c, _ = s.convert(&Change{Op: Insert, Table: keyed, Key: []Value{tv("4"), unch, unch}, New: []Value{tv("4"), {Kind: ValueNull}, tv("b")}})
	if c.Kind != wal.Insert || c.Old != nil || c.New[1].Kind != wal.ValueNull {
		t.Errorf("insert: %+v", c)
	}
	// One relation per captured table description.
	if a, _ := s.convert(&Change{Op: Delete, Table: keyed, Key: []Value{tv("5"), unch, unch}}); a.Rel != c.Rel {
		t.Error("a second change of one table got a new relation")
	}
}
