package verify

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Rows are hashed column by column, with each type's own hash where it
// is exact. Values that their type calls equal but that read differently
// (1.0 and 1.00, 'Abc' and 'abc' under a case-insensitive collation or
// citext, 0 and -0, '1 day' and '24 hours') are differences all the same,
// as are NULL and ”, and two values swapped between columns; a column
// declared int on one side and bigint on the other holding the same
// numbers is not. Each case is a table of its own, so that a weak row hash
// cannot hide behind another difference in the same chunk; with and
// without a primary key.
func TestValuesEqualUnderTheirTypeAreStillDifferences(t *testing.T) {
	cases := []struct {
		name, cols, srcRow, dstRow string
		dstType                    string // the target's column type, when it differs
	}{
		{name: "num_scale", cols: "v numeric", srcRow: "1.0", dstRow: "1.00"},
		{name: "citext_case", cols: "v citext", srcRow: "'Abc'", dstRow: "'abc'"},
		{name: "nocase_text", cols: "v text COLLATE nocase", srcRow: "'Abc'", dstRow: "'abc'"},
		{name: "nocase_varchar", cols: "v varchar(10) COLLATE nocase", srcRow: "'Abc'", dstRow: "'abc'"},
		{name: "float_zero", cols: "v float8", srcRow: "0", dstRow: "'-0'"},
		{name: "interval_units", cols: "v interval", srcRow: "'1 day'", dstRow: "'24 hours'"},
		{name: "jsonb_scale", cols: "v jsonb", srcRow: `'{"a": 1.0}'`, dstRow: `'{"a": 1.00}'`},
		{name: "tz_micro", cols: "v timestamptz", srcRow: "'2024-05-01 12:00:00+00'", dstRow: "'2024-05-01 12:00:00.000001+00'"},
		{name: "bool_flip", cols: "v boolean", srcRow: "true", dstRow: "false"},
		{name: "null_empty", cols: "v text", srcRow: "NULL", dstRow: "''"},
		{name: "null_zero", cols: "v int", srcRow: "NULL", dstRow: "0"},
		{name: "uuid_bit", cols: "v uuid", srcRow: "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", dstRow: "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12'"},
		{name: "swapped", cols: "x int, y int", srcRow: "1, 2", dstRow: "2, 1"},
		{name: "swapped_text", cols: "x text, y text", srcRow: "'a', 'b'", dstRow: "'b', 'a'"},
		{name: "widened", cols: "v int", srcRow: "7", dstRow: "7", dstType: "v bigint"},
	}
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	ddl := `CREATE EXTENSION IF NOT EXISTS citext;
		CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);`
	srcSQL, dstSQL := ddl, ddl
	var want []string
	for _, c := range cases {
		dstCols := c.cols
		if c.dstType != "" {
			dstCols = c.dstType
		}
		for _, keyed := range []bool{true, false} {
			table, pk := c.name, "id int PRIMARY KEY, "
			if !keyed {
				table, pk = c.name+"_nokey", "id int, "
			}
			srcSQL += fmt.Sprintf("CREATE TABLE %s (%s%s); INSERT INTO %s VALUES (1, %s), (2, %s);\n", table, pk, c.cols, table, c.srcRow, c.srcRow)
			dstSQL += fmt.Sprintf("CREATE TABLE %s (%s%s); INSERT INTO %s VALUES (1, %s), (2, %s);\n", table, pk, dstCols, table, c.srcRow, c.dstRow)
			if c.srcRow == c.dstRow {
				continue
			}
			if keyed {
				want = append(want, "public."+table+" | different | id=2")
			} else {
				want = append(want, "public."+table+" | extra on target", "public."+table+" | missing on target")
			}
		}
	}
	pg.Exec(t, src, srcSQL+"ANALYZE;")
	pg.Exec(t, dst, dstSQL+"ANALYZE;")
	rep := runVerify(t, testConfig(src, dst))
	// Columns and row texts are checked elsewhere; here: which rows.
	var got []string
	for _, tr := range rep.Tables {
		for _, d := range tr.Rows {
			got = append(got, strings.TrimSpace(tr.Table+" | "+d.Kind+" | "+d.Key))
		}
	}
	for i := range got {
		got[i] = strings.TrimSuffix(got[i], " |")
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestKeyGrid(t *testing.T) {
	intKey := column{name: "id", typOID: 23, sameType: true}
	seq := func(from, step, n int) []string {
		var out []string
		for i := 0; i < n; i++ {
			out = append(out, fmt.Sprint(from+i*step))
		}
		return out
	}
	// Serial keys with small gaps: cells as wide as the planned ranges.
	gr, ok := keyGrid(intKey, []string{"1001", "2003", "2999", "4010", "5000"})
	if !ok || gr.width != 1000 {
		t.Fatalf("evenly spread keys: grid %+v, %v", gr, ok)
	}
	if got := gr.expr(intKey); got != `("id" / 1000)` {
		t.Errorf("int4 cell %s", got)
	}
	if got := gr.expr(column{name: "id", typOID: 20, sameType: true}); got != `("id"::int8 / 1000)` {
		t.Errorf("int8 cell %s", got)
	}
	// Every key falls in the range of its cell (truncated division, as
	// Postgres and Go both divide), and the ranges tile the key space.
	small := grid{width: 10, min: math.MinInt32, max: math.MaxInt32}
	for k := int64(-35); k <= 35; k++ {
		r := small.rangeOf(k / 10)
		lo, _ := strconv.ParseInt(r.lo[0], 10, 64)
		hi, _ := strconv.ParseInt(r.hi[0], 10, 64)
		if k < lo || k >= hi {
			t.Errorf("key %d in cell %d: range [%d, %d)", k, k/10, lo, hi)
		}
	}
	for g := int64(-4); g < 4; g++ {
		if a, b := small.rangeOf(g).hi[0], small.rangeOf(g + 1).lo[0]; a != b {
			t.Errorf("cell %d ends at %s, cell %d starts at %s", g, a, g+1, b)
		}
	}
	// Bounds beyond the key's type are left open.
	edge := grid{width: 1 << 30, min: math.MinInt32, max: math.MaxInt32}
	if r := edge.rangeOf(1); r.hi != nil || r.lo[0] != "1073741824" {
		t.Errorf("top cell %v: want [1073741824, open)", r)
	}
	if r := edge.rangeOf(-2); r.lo != nil {
		t.Errorf("bottom cell %v: want an open lower bound", r)
	}
	if _, ok := keyGrid(intKey, append(seq(1, 10, 20), "1000000000")); ok {
		t.Error("keys clumped at one end accepted: one cell would hold them all")
	}
	if _, ok := keyGrid(column{name: "id", typOID: 1700, sameType: true}, seq(1, 10, 20)); ok {
		t.Error("numeric key accepted")
	}
	if _, ok := keyGrid(column{name: "id", typOID: 23}, seq(1, 10, 20)); ok {
		t.Error("key of another type on the target accepted")
	}
}
