package verify

import (
	"strings"
	"testing"
)

// Tables at the edges of what a schema allows: no columns at all, keys of
// enum, numeric (with NaN) and timestamp (with infinity) types, empty
// tables, and a table empty on one side only.
func TestEdgeCaseTables(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	ddl := `CREATE TYPE color AS ENUM ('red', 'green', 'blue');
		CREATE TABLE nocols (); CREATE TABLE by_color (c color PRIMARY KEY, n int);
		CREATE TABLE by_num (k numeric PRIMARY KEY, v text); CREATE TABLE by_time (k timestamptz PRIMARY KEY, v int);
		CREATE TABLE empty_both (id int PRIMARY KEY); CREATE TABLE empty_target (id int PRIMARY KEY);
		INSERT INTO by_color VALUES ('red', 1), ('green', 2), ('blue', 3);
		INSERT INTO by_num SELECT i / 7.0, 'v' || i FROM generate_series(1, 1200) i; INSERT INTO by_num VALUES ('NaN', 'nan');
		INSERT INTO by_time SELECT '2024-01-01'::timestamptz + i * interval '1 hour', i FROM generate_series(1, 1200) i;
		INSERT INTO by_time VALUES ('infinity', 0), ('-infinity', 0);
		ANALYZE;`
	pg.Exec(t, src, ddl+`INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES;
		INSERT INTO empty_target VALUES (1);`)
	pg.Exec(t, dst, ddl+`INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES;
		UPDATE by_color SET n = 5 WHERE c = 'green'; UPDATE by_num SET v = 'x' WHERE k = 'NaN';
		DELETE FROM by_time WHERE k = 'infinity'; UPDATE by_num SET v = 'y' WHERE k = 1000 / 7.0;`)
	rep := runVerify(t, testConfig(src, dst))
	want := []string{
		"public.by_color | different | c=green | n",
		"public.by_num | different | k=142.8571428571428571 | v",
		"public.by_num | different | k=NaN | v",
		"public.by_time | missing on target | k=infinity",
		"public.empty_target | missing on target | id=1",
		"public.nocols | missing on target | ()",
	}
	if got := diffLines(rep); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rep.TablesChecked != 6 || rep.TablesIdentical != 1 {
		t.Errorf("checked %d, identical %d; want 6 and 1 (empty_both)", rep.TablesChecked, rep.TablesIdentical)
	}
}
