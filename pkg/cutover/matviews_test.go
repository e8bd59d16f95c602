package cutover

import (
	"context"
	"slices"
	"testing"
)

// Materialized views on the target hold what the snapshot computed; the
// cutover's refresh makes them what the final data gives, a view built
// on another view included, and leaves an unpopulated one alone.
func TestRefreshMatViews(t *testing.T) {
	db := pg.NewDatabase(t)
	pg.Exec(t, db, `CREATE TABLE orders (id int PRIMARY KEY, customer int);
		INSERT INTO orders SELECT g, g % 3 FROM generate_series(1, 3) g;
		CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n FROM orders GROUP BY customer;
		CREATE MATERIALIZED VIEW "Big ""Customers""" AS SELECT customer FROM per_customer WHERE n > 10;
		CREATE MATERIALIZED VIEW never AS SELECT 1 AS one WITH NO DATA;
		INSERT INTO orders SELECT g, g % 3 FROM generate_series(4, 119) g`)
	conn := pg.Connect(t, db)
	done, err := refreshMatViews(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"public.per_customer", `public."Big ""Customers"""`}; !slices.Equal(done, want) {
		t.Errorf("refreshed %v, want %v in creation order", done, want)
	}
	const view = `SELECT string_agg(customer || ':' || n, ',' ORDER BY customer) FROM per_customer`
	const base = `SELECT string_agg(customer || ':' || n, ',' ORDER BY customer) FROM (SELECT customer, count(*) AS n FROM orders GROUP BY customer) x`
	if got, want := query(t, db, view)[0], query(t, db, base)[0]; got != want {
		t.Errorf("per_customer holds %s, the data gives %s", got, want)
	}
	if got := query(t, db, `SELECT count(*)::text FROM "Big ""Customers"""`)[0]; got != "3" {
		t.Errorf("the view on a view holds %s rows, want 3", got)
	}
	if got := query(t, db, `SELECT relispopulated::text FROM pg_class WHERE relname = 'never'`)[0]; got != "false" {
		t.Errorf("an unpopulated view was filled")
	}
}
