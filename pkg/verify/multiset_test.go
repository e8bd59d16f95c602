package verify

import (
	"strings"
	"testing"
)

// Duplicates add up instead of cancelling (a sum, not an xor), and NULL
// is not the empty string: here both sides hold three rows whose xor of
// hashes would be equal.
func TestDuplicatesAndNullsDoNotCancel(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE notes (body text, n int); INSERT INTO notes VALUES ('a', 1), ('a', 1), ('b', 2), (NULL, 3)`)
	pg.Exec(t, dst, `CREATE TABLE notes (body text, n int); INSERT INTO notes VALUES ('b', 2), ('c', 1), ('c', 1), ('', 3)`)
	rep := runVerify(t, testConfig(src, dst))
	want := []string{
		`public.notes | extra on target | ("",3)`,
		`public.notes | extra on target | (c,1)`,
		`public.notes | missing on target | (,3)`,
		`public.notes | missing on target | (a,1)`,
	}
	if got := diffLines(rep); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, d := range rep.Tables[0].Rows {
		if wantCount := map[string]int64{"(a,1)": 2, "(c,1)": 2}[d.Row]; wantCount != 0 && d.Count != wantCount {
			t.Errorf("%s %s: count %d, want %d", d.Kind, d.Row, d.Count, wantCount)
		}
	}
}

func TestNum(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 5000000: "5,000,000", -1234: "-1,234"} {
		if got := num(n); got != want {
			t.Errorf("num(%d) = %q, want %q", n, got, want)
		}
	}
}
