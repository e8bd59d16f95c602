package demoapp

import (
	"context"
	"testing"
	"time"

	"replicator/internal/testenv"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }

// The demo's seed and load must run against a real server without errors,
// and load must actually write.
func TestSeedAndLoad(t *testing.T) {
	db := pg.NewDatabase(t)
	ctx := context.Background()
	if err := Seed(ctx, pg.URL(db), Size{Users: 200, Products: 20, Events: 500, Documents: 3}); err != nil {
		t.Fatal(err)
	}
	var users, items int
	conn := pg.Connect(t, db)
	conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM order_items)").Scan(&users, &items)
	if users != 200 || items == 0 {
		t.Fatalf("seeded %d users, %d items", users, items)
	}
	lctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	var st Stats
	if err := Load(lctx, pg.URL(db), 100, &st); err != nil {
		t.Fatal(err)
	}
	if st.Transactions.Load() < 16 || st.Errors.Load() != 0 {
		t.Fatalf("load wrote %d transactions with %d errors, last: %v", st.Transactions.Load(), st.Errors.Load(), st.LastError.Load())
	}
	var after int
	conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&after)
	if after <= users {
		t.Fatalf("load added no users: %d", after)
	}
}
