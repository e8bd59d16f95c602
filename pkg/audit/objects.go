package audit

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgcatalog"
)

// Sequence is one of the application's sequences. Standalone ones (owned
// by no column) are those an app calls nextval() on by name: cutover must
// move them forward too, and they are easy to forget.
type Sequence struct {
	Name    string `json:"name"`
	OwnedBy string `json:"owned_by,omitempty"` // table.column; "" when standalone
}

// Objects are the kinds of object a migration has to think about: none is
// carried by logical decoding, some are not copied at all.
type Objects struct {
	Triggers          []string `json:"triggers"`           // table: trigger (the application's, not replicator's)
	ForeignTables     []string `json:"foreign_tables"`     // they hold no data here; their server must exist on AWS
	MaterializedViews []string `json:"materialized_views"` // rebuilt, not copied: REFRESH after the snapshot
	GeneratedColumns  []string `json:"generated_columns"`  // table.column: computed on the target, never written
}

// Role is a role other than the connecting one that owns objects or holds
// privileges in this database: RDS will not have it unless it is created.
type Role struct {
	Name   string `json:"name"`
	Owns   int    `json:"owns"`   // relations it owns
	Grants int    `json:"grants"` // table privileges granted to it
}

// Connections is what `heroku pg:info` shows of the sessions: how many,
// in which state, and the oldest open transactions.
type Connections struct {
	Total   int            `json:"total"`
	ByState map[string]int `json:"by_state"`
	Max     int            `json:"max_connections"`
	Oldest  []Transaction  `json:"oldest_transactions"`
	Checked string         `json:"-"`
}

// estimateRows fills in the row estimate of tables never analyzed
// (reltuples = -1, shown as 0 rows before): small ones are counted, larger
// ones sampled with TABLESAMPLE SYSTEM (1 % of the pages), so that the
// audit never reads a large table whole.
func estimateRows(ctx context.Context, conn *pgx.Conn, tables []Table) error {
	const countUpTo = 64 << 20
	for i := range tables {
		t := &tables[i]
		if t.Rows >= 0 {
			t.RowsSource = "statistics"
			continue
		}
		if t.Partitioned {
			t.Rows, t.RowsSource = 0, "partitions (see each partition)"
			continue
		}
		q, how := "SELECT count(*) FROM "+t.Name, "counted (never analyzed)"
		if t.Bytes > countUpTo {
			q, how = "SELECT count(*) * 100 FROM "+t.Name+" TABLESAMPLE SYSTEM (1)", "sampled 1% of pages (never analyzed)"
		}
		if err := conn.QueryRow(ctx, q).Scan(&t.Rows); err != nil {
			return fmt.Errorf("source: estimate the rows of never-analyzed table %s: %w", t.Name, err)
		}
		t.RowsSource = how
	}
	return nil
}

// auditObjects reads sequences, objects, roles and connections.
func (r *PostgresReport) auditObjects(ctx context.Context, conn *pgx.Conn) error {
	var err error
	r.SequenceList, err = collect(ctx, conn, `SELECT format('%I.%I', n.nspname, c.relname),
			coalesce((SELECT format('%s.%I', d.refobjid::regclass, a.attname) FROM pg_depend d
				JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
				WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i') LIMIT 1), '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'S' AND `+pgcatalog.UserRelation+` ORDER BY 1`,
		func(rows pgx.Rows) (Sequence, error) {
			var s Sequence
			return s, rows.Scan(&s.Name, &s.OwnedBy)
		})
	if err != nil {
		return fmt.Errorf("source: list sequences: %w", err)
	}
	str := func(rows pgx.Rows) (string, error) {
		var s string
		return s, rows.Scan(&s)
	}
	if r.Objects.Triggers, err = collect(ctx, conn, `SELECT format('%s: %I', t.tgrelid::regclass, t.tgname)
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE NOT t.tgisinternal AND n.nspname <> 'replicator' AND `+pgcatalog.UserRelation+` ORDER BY 1`, str); err != nil {
		return fmt.Errorf("source: list triggers: %w", err)
	}
	if r.Objects.ForeignTables, err = collect(ctx, conn, `SELECT format('%I.%I (server %I)', n.nspname, c.relname, s.srvname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_foreign_table f ON f.ftrelid = c.oid
		JOIN pg_foreign_server s ON s.oid = f.ftserver WHERE c.relkind = 'f' AND `+pgcatalog.UserRelation+` ORDER BY 1`, str); err != nil {
		return fmt.Errorf("source: list foreign tables: %w", err)
	}
	if r.Objects.MaterializedViews, err = collect(ctx, conn, `SELECT format('%I.%I', n.nspname, c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND `+pgcatalog.UserRelation+` ORDER BY 1`, str); err != nil {
		return fmt.Errorf("source: list materialized views: %w", err)
	}
	if r.Objects.GeneratedColumns, err = collect(ctx, conn, `SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE a.attgenerated <> '' AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND `+pgcatalog.UserRelation+` ORDER BY 1`, str); err != nil {
		return fmt.Errorf("source: list generated columns: %w", err)
	}
	if r.Roles, err = collect(ctx, conn, `WITH owners AS (
			SELECT c.relowner AS role, count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND `+pgcatalog.UserRelation+` GROUP BY 1),
		grants AS (
			SELECT acl.grantee AS role, count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
				aclexplode(c.relacl) acl
			WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND acl.grantee <> 0 AND acl.grantee <> c.relowner AND `+pgcatalog.UserRelation+` GROUP BY 1)
		SELECT r.rolname, coalesce(o.n, 0)::int, coalesce(g.n, 0)::int
		FROM pg_roles r LEFT JOIN owners o ON o.role = r.oid LEFT JOIN grants g ON g.role = r.oid
		WHERE (o.n > 0 OR g.n > 0) AND r.rolname <> current_user ORDER BY 1`,
		func(rows pgx.Rows) (Role, error) {
			var ro Role
			return ro, rows.Scan(&ro.Name, &ro.Owns, &ro.Grants)
		}); err != nil {
		return fmt.Errorf("source: list roles and grants: %w", err)
	}
	c := Connections{ByState: map[string]int{}}
	states, err := collect(ctx, conn, `SELECT coalesce(state, 'unknown'), count(*)::int FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 1`,
		func(rows pgx.Rows) ([2]any, error) {
			var s string
			var n int
			err := rows.Scan(&s, &n)
			return [2]any{s, n}, err
		})
	if err != nil {
		return fmt.Errorf("source: count connections: %w", err)
	}
	for _, s := range states {
		c.ByState[s[0].(string)] = s[1].(int)
		c.Total += s[1].(int)
	}
	if err := conn.QueryRow(ctx, `SELECT current_setting('max_connections')::int`).Scan(&c.Max); err != nil {
		return fmt.Errorf("source: read max_connections: %w", err)
	}
	if c.Oldest, err = collect(ctx, conn, `SELECT pid, coalesce(usename, ''), date_trunc('second', now() - xact_start)::text, coalesce(state, '')
		FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'
		ORDER BY xact_start LIMIT 5`,
		func(rows pgx.Rows) (Transaction, error) {
			var t Transaction
			return t, rows.Scan(&t.PID, &t.User, &t.Age, &t.State)
		}); err != nil {
		return fmt.Errorf("source: list the oldest transactions: %w", err)
	}
	r.Connections = c
	return nil
}

// collect runs q and scans each row with scan.
func collect[T any](ctx context.Context, conn *pgx.Conn, q string, scan func(pgx.Rows) (T, error)) ([]T, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
