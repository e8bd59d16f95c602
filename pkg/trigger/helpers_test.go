package trigger_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/internal/testenv"
	"replicator/pkg/pgutil"
	"replicator/pkg/trigger"
)

// src runs wal_level=replica, as Heroku Postgres looks to its customers;
// logical is a normal source (wal_level=logical) for Choose.
var src, logical *testenv.Postgres

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if src, err = testenv.StartPostgres(testenv.PostgresOptions{WalLevel: "replica"}); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a PostgreSQL test server: %v\n", err)
		return 1
	}
	defer src.Close()
	if logical, err = testenv.StartPostgres(testenv.PostgresOptions{}); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a PostgreSQL test server: %v\n", err)
		return 1
	}
	defer logical.Close()
	return m.Run()
}

const appPassword = "app-Pw-42"

// source is one test's source database whose tables belong to a role that
// is neither superuser nor REPLICATION, as Heroku's default credential.
type source struct {
	db   string
	role string
	url  string // as the role
}

func newSource(t *testing.T, pg *testenv.Postgres) *source {
	t.Helper()
	role := fmt.Sprintf("app_%d", time.Now().UnixNano()%1e9)
	pg.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' NOSUPERUSER NOREPLICATION NOCREATEDB NOCREATEROLE", role, appPassword))
	// Registered before the database, so it runs after the database is gone.
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := pgx.Connect(ctx, pg.URL("postgres")); err == nil {
			conn.Exec(ctx, "DROP ROLE IF EXISTS "+role)
			conn.Close(ctx)
		}
	})
	db := pg.NewDatabase(t)
	pg.Exec(t, db, fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s; GRANT CREATE, USAGE ON SCHEMA public TO %s", db, role, role))
	return &source{db: db, role: role, url: pg.URLAs(role, appPassword, db)}
}

func (s *source) connect(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), s.url)
	if err != nil {
		t.Fatalf("connect as %s: %v", s.role, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (s *source) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), s.url)
	if err != nil {
		t.Fatalf("connect as %s: %v", s.role, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec as %s: %v\nSQL: %s", s.role, err, sql)
	}
}

func testConfig() trigger.Config {
	return trigger.Config{TickInterval: 50 * time.Millisecond, PageRows: 50, PurgeRows: 100, MetricsInterval: time.Millisecond}
}

func install(t *testing.T, s *source) []*trigger.Table {
	t.Helper()
	conn := s.connect(t)
	tables, err := trigger.Install(context.Background(), conn, testConfig(), zap.NewNop())
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	return tables
}

// copySnapshot copies every captured table from the source, reading
// through the exported snapshot as the copy workers of pkg/snapshot do,
// into the same tables of the target.
func copySnapshot(t *testing.T, s *source, snapshotName string, target *pgx.Conn, tables []*trigger.Table) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", snapshotName)); err != nil {
		t.Fatalf("import snapshot: %v", err)
	}
	for _, tb := range tables {
		if tb.Root != tb.ID {
			continue // copied through the root
		}
		var cols []string
		for _, c := range tb.Columns {
			cols = append(cols, pgutil.QuoteIdent(c.Name))
		}
		list := strings.Join(cols, ", ")
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			_, err := conn.PgConn().CopyTo(ctx, pw, fmt.Sprintf("COPY (SELECT %s FROM %s) TO STDOUT", list, tb))
			pw.CloseWithError(err)
			errc <- err
		}()
		if _, err := target.PgConn().CopyFrom(ctx, pr, fmt.Sprintf("COPY %s (%s) FROM STDIN", tb, list)); err != nil {
			t.Fatalf("copy %s into the target: %v", tb, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("copy %s from the source: %v", tb, err)
		}
	}
	conn.Exec(ctx, "COMMIT")
}

// applyChange is the test's own applier: plain SQL with every value as a
// literal that the column's input function reads. UPDATE and DELETE must
// touch exactly one row.
func applyChange(ctx context.Context, tx pgx.Tx, ch *trigger.Change) error {
	tb := ch.Table
	lit := func(v trigger.Value) string {
		if v.Kind == trigger.ValueNull {
			return "NULL"
		}
		return pgutil.QuoteLiteral(string(v.Text))
	}
	where := func() string {
		var conds []string
		for i, c := range tb.Columns {
			if !c.Key {
				continue
			}
			if ch.Key[i].Kind == trigger.ValueNull {
				conds = append(conds, pgutil.QuoteIdent(c.Name)+" IS NULL")
			} else {
				conds = append(conds, pgutil.QuoteIdent(c.Name)+" = "+lit(ch.Key[i]))
			}
		}
		w := strings.Join(conds, " AND ")
		if tb.Identity == 'f' {
			// identical duplicates: exactly one of them
			return fmt.Sprintf("ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", tb, w)
		}
		return w
	}
	var q string
	switch ch.Op {
	case trigger.Insert:
		var cols, vals []string
		for i, c := range tb.Columns {
			if ch.New[i].Kind != trigger.ValueUnchanged {
				cols = append(cols, pgutil.QuoteIdent(c.Name))
				vals = append(vals, lit(ch.New[i]))
			}
		}
		q = fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", tb, strings.Join(cols, ", "), strings.Join(vals, ", "))
	case trigger.Update:
		var sets []string
		for i, c := range tb.Columns {
			if ch.New[i].Kind != trigger.ValueUnchanged {
				sets = append(sets, pgutil.QuoteIdent(c.Name)+" = "+lit(ch.New[i]))
			}
		}
		q = fmt.Sprintf("UPDATE %s SET %s WHERE %s", tb, strings.Join(sets, ", "), where())
	case trigger.Delete:
		q = fmt.Sprintf("DELETE FROM %s WHERE %s", tb, where())
	case trigger.Truncate:
		q = "TRUNCATE " + tb.String()
	}
	tag, err := tx.Exec(ctx, q)
	if err != nil {
		return fmt.Errorf("apply %s of %s %s (changelog id %d): %w\n%s", ch.Op, tb, ch.KeyString(), ch.ID, err, q)
	}
	if (ch.Op == trigger.Update || ch.Op == trigger.Delete) && tag.RowsAffected() != 1 {
		return fmt.Errorf("apply %s of %s %s (changelog id %d): %d rows matched\n%s", ch.Op, tb, ch.KeyString(), ch.ID, tag.RowsAffected(), q)
	}
	return nil
}

// seen is what a test learns about the batches it applied.
type seen struct {
	txnBatch map[uint64]int64 // transaction → the batch it was in
	changes  int
}

// applyBatch reads batch b and applies it in one target transaction.
func applyBatch(t *testing.T, capt *trigger.Capture, b *trigger.Batch, target *pgx.Conn, sn *seen) {
	t.Helper()
	ctx := context.Background()
	cur, err := capt.Open(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	tx, err := target.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := applyCursor(ctx, b, cur, tx, sn); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// applyCursor applies a batch's changes in tx, checking that each
// transaction's changes are contiguous and end with TxnEnd, and that no
// transaction appears in two batches.
func applyCursor(ctx context.Context, b *trigger.Batch, cur *trigger.Cursor, tx pgx.Tx, sn *seen) error {
	var open uint64 // transaction whose changes are being read
	var lastID int64
	for cur.Next(ctx) {
		ch := cur.Change()
		if ch.ID <= lastID && ch.TxID == open {
			return fmt.Errorf("batch %d: changelog id %d after %d within transaction %d", b.ID, ch.ID, lastID, ch.TxID)
		}
		if open != 0 && ch.TxID != open {
			return fmt.Errorf("batch %d: transaction %d interleaved with %d, which had not ended", b.ID, ch.TxID, open)
		}
		if open == 0 {
			if prev, ok := sn.txnBatch[ch.TxID]; ok {
				return fmt.Errorf("transaction %d is split: in batch %d and batch %d", ch.TxID, prev, b.ID)
			}
			sn.txnBatch[ch.TxID] = b.ID
		}
		open, lastID = ch.TxID, ch.ID
		if ch.TxnEnd {
			open = 0
		}
		if err := applyChange(ctx, tx, ch); err != nil {
			return fmt.Errorf("batch %d: %w", b.ID, err)
		}
		sn.changes++
	}
	if err := cur.Err(); err != nil {
		return err
	}
	if open != 0 {
		return fmt.Errorf("batch %d ended inside transaction %d", b.ID, open)
	}
	return nil
}

// checksums computes, independently of the code under test, a digest of
// every table's sorted row texts.
func checksums(t *testing.T, conn *pgx.Conn, tables []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tb := range tables {
		var sum string
		var n int64
		err := conn.QueryRow(context.Background(), fmt.Sprintf(
			`SELECT md5(coalesce(string_agg(r::text, E'\n' ORDER BY r::text COLLATE "C"), '')), count(*) FROM %s r`, tb)).Scan(&sum, &n)
		if err != nil {
			t.Fatalf("checksum of %s: %v", tb, err)
		}
		out[tb] = fmt.Sprintf("%s (%d rows)", sum, n)
	}
	return out
}

func compareTables(t *testing.T, source, target *pgx.Conn, tables []string) {
	t.Helper()
	sort.Strings(tables)
	a, b := checksums(t, source, tables), checksums(t, target, tables)
	for _, tb := range tables {
		if a[tb] != b[tb] {
			t.Errorf("table %s differs: source %s, target %s", tb, a[tb], b[tb])
		}
	}
}

// isRetryable is what concurrent writers may meet and just retry.
func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.DeadlockDetected || pgErr.Code == pgerrcode.SerializationFailure || pgErr.Code == pgerrcode.UniqueViolation)
}
