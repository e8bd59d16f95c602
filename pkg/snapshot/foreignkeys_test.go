package snapshot

import (
	"context"
	"strings"
	"testing"

	"replicator/pkg/state"
)

// TestChunkedCopyForeignKeysPendingUntilValid: after a chunked copy the
// foreign key is NOT VALID on the target and recorded pending. While a
// referenced row is missing on the target (as before the stream has
// caught up) ValidateForeignKeys leaves it pending, with the violation
// recorded; once the row is there it validates it, the record goes, and
// the key is the source's again.
func TestChunkedCopyForeignKeysPendingUntilValid(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE users (id int PRIMARY KEY, name text);
		CREATE TABLE orders (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users, pad text);
		INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 2000) g;
		INSERT INTO orders SELECT g, 1 + g % 2000, repeat('o', 50) FROM generate_series(1, 4000) g; ANALYZE`)
	cfg.ChunkBytes = 16 << 10
	bg := context.Background()
	if _, err := Run(bg, cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	valid := `SELECT convalidated::text FROM pg_constraint WHERE conname = 'orders_user_id_fkey'`
	if got := queryString(t, dst, valid); got != "false" {
		t.Fatalf("orders_user_id_fkey validated = %s on the target after the chunked copy, want false (NOT VALID)", got)
	}
	conn := pg.Connect(t, dst)
	keys, err := state.PendingForeignKeys(bg, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].String() != `orders_user_id_fkey on public.orders` {
		t.Fatalf("pending foreign keys %v, want [orders_user_id_fkey on public.orders]", keys)
	}

	// As the stream does, with the replica role: the NOT VALID key is
	// enforced for the app's writes.
	pg.Exec(t, dst, `SET session_replication_role = replica; DELETE FROM users WHERE id = 7`)
	validated, left, err := ValidateForeignKeys(bg, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(validated) != 0 || len(left) != 1 || !strings.Contains(left[0].LastError, "(user_id)=(7)") {
		t.Fatalf("with user 7 missing: validated %v, left %v; want none validated and the key left naming user_id 7", validated, left)
	}
	if got := queryString(t, dst, valid); got != "false" {
		t.Errorf("orders_user_id_fkey validated = %s with user 7 missing", got)
	}
	if keys, _ := state.PendingForeignKeys(bg, conn); len(keys) != 1 || !strings.Contains(keys[0].LastError, "(user_id)=(7)") {
		t.Errorf("pending after the failed try: %v, want the key with its violation", keys)
	}
	mustContain(t, PendingForeignKeysError(left).Error(), "orders_user_id_fkey on public.orders", "(user_id)=(7)", "VALIDATE CONSTRAINT")

	pg.Exec(t, dst, `INSERT INTO users VALUES (7, 'u7')`)
	if validated, left, err = ValidateForeignKeys(bg, conn); err != nil || len(validated) != 1 || len(left) != 0 {
		t.Fatalf("with user 7 back: validated %v, left %v, err %v; want the key validated", validated, left, err)
	}
	if got := queryString(t, dst, valid); got != "true" {
		t.Errorf("orders_user_id_fkey validated = %s after ValidateForeignKeys", got)
	}
	if keys, err := state.PendingForeignKeys(bg, conn); err != nil || len(keys) != 0 {
		t.Errorf("pending after validation: %v, %v; want none", keys, err)
	}
	def := `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'orders_user_id_fkey'`
	if s, d := queryString(t, src, def), queryString(t, dst, def); s != d {
		t.Errorf("foreign key on the target %q, on the source %q", d, s)
	}
}

// A pending key dropped from the target, or whose table was, is
// forgotten rather than left pending for good (cutover would refuse
// until it validated).
func TestPendingForeignKeyGoneFromTheTarget(t *testing.T) {
	dst := pg.NewDatabase(t)
	pg.Exec(t, dst, `CREATE SCHEMA replicator; CREATE TABLE parents (id int PRIMARY KEY); CREATE TABLE kids (id int PRIMARY KEY, p int)`)
	pg.Exec(t, dst, state.PendingFKsDDL)
	pg.Exec(t, dst, `INSERT INTO replicator.pending_fks (table_name, constraint_name) VALUES ('public.kids', 'kids_p_fkey'), ('public.gone', 'gone_p_fkey')`)
	bg := context.Background()
	conn := pg.Connect(t, dst)
	validated, left, err := ValidateForeignKeys(bg, conn)
	if err != nil || len(validated) != 0 || len(left) != 0 {
		t.Fatalf("validated %v, left %v, err %v; want neither, no error", validated, left, err)
	}
	if keys, err := state.PendingForeignKeys(bg, conn); err != nil || len(keys) != 0 {
		t.Errorf("pending after the keys are gone: %v, %v; want none", keys, err)
	}
}
