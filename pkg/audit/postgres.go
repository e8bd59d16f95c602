package audit

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/snapshot"
)

// Options tune the audit.
type Options struct {
	// LongTransaction is the age from which an open transaction is listed.
	// Zero means 5 minutes.
	LongTransaction time.Duration
	// CopyRateMBps is the copy rate used for the time estimate, in MB of
	// table data per second. Zero means DefaultCopyRateMBps.
	CopyRateMBps float64
}

// DefaultCopyRateMBps is the snapshot rate measured by bench/snapshot on
// the reference 2-core machine (bench/README.md); real hosts with more
// cores and a network between the databases will differ, so the estimate
// is stated as such.
const DefaultCopyRateMBps = 60.0

// PostgresReport is the inventory of a source database.
type PostgresReport struct {
	Version          string        `json:"version"`
	VersionNum       int           `json:"version_num"`
	Database         string        `json:"database"`
	SizeBytes        int64         `json:"size_bytes"`
	Tables           []Table       `json:"tables"`
	NoReplicaKey     []string      `json:"tables_without_primary_key_or_replica_identity"`
	Unlogged         []string      `json:"unlogged_tables"`
	Extensions       []Extension   `json:"extensions"`
	Sequences        int           `json:"sequences"`
	SequenceList     []Sequence    `json:"sequence_list"`
	Objects          Objects       `json:"objects"`
	Roles            []Role        `json:"roles_rds_will_not_have"`
	Connections      Connections   `json:"connections"`
	LargeObjects     int64         `json:"large_objects"`
	LongTransactions []Transaction `json:"long_running_transactions"`
	Capture          Capture       `json:"capture"`
	EstimatedCopy    string        `json:"estimated_copy_time"`
	CopyRateMBps     float64       `json:"copy_rate_mb_per_s"`
	DatabaseSettings []string      `json:"database_settings"`         // ALTER DATABASE … SET names (never values: they may be secrets), carried by the snapshot
	RoleSettings     []string      `json:"role_settings_in_database"` // "name (role r)" of ALTER ROLE … IN DATABASE … SET, not carried
}

// Table is one table's size.
type Table struct {
	Name          string `json:"name"`
	Rows          int64  `json:"rows_estimate"`
	RowsSource    string `json:"rows_source"` // "statistics", or how a never-analyzed table was estimated
	Bytes         int64  `json:"total_bytes"`
	HasPrimaryKey bool   `json:"has_primary_key"`
	Partitioned   bool   `json:"partitioned,omitempty"`
}

// Extension is an installed extension and whether RDS offers it.
type Extension struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	OnRDS   bool   `json:"offered_by_rds"`
	// RDSVersion is the version RDS for PostgreSQL 15 offers; "" when not
	// known here (see rdsExtensions).
	RDSVersion  string `json:"rds_version,omitempty"`
	Remediation string `json:"remediation,omitempty"`
	// RDSNote says it for a person: the version RDS offers, or to check
	// `SHOW rds.extensions` on the instance when this tool does not know.
	RDSNote string `json:"rds_note"`
}

// Transaction is a long-running open transaction on the source.
type Transaction struct {
	PID   int    `json:"pid"`
	User  string `json:"user"`
	Age   string `json:"age"`
	State string `json:"state"`
}

// Capture says which change capture will work on this source and why.
type Capture struct {
	Mode   string `json:"mode"` // "logical" or "trigger"
	Reason string `json:"reason"`
}

// Postgres audits the database conn is connected to. It only reads.
func Postgres(ctx context.Context, conn *pgx.Conn, opts Options) (*PostgresReport, error) {
	if opts.LongTransaction == 0 {
		opts.LongTransaction = 5 * time.Minute
	}
	if opts.CopyRateMBps == 0 {
		opts.CopyRateMBps = DefaultCopyRateMBps
	}
	r := &PostgresReport{CopyRateMBps: opts.CopyRateMBps}
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('server_version_num')::int,
		current_database(), pg_database_size(current_database())`).Scan(&r.Version, &r.VersionNum, &r.Database, &r.SizeBytes); err != nil {
		return nil, fmt.Errorf("source: read version and size: %w", err)
	}
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname), CASE WHEN c.reltuples < 0 THEN -1 ELSE c.reltuples END::bigint,
		       CASE WHEN c.relkind = 'p' THEN coalesce((SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i WHERE i.inhparent = c.oid), 0)
		            ELSE pg_total_relation_size(c.oid) END::bigint,
		       EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary),
		       `+pgcatalog.ReplicaKey+`, c.relkind = 'p', c.relpersistence = 'u'
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.AllTables})+`
		ORDER BY 3 DESC, 1`)
	if err != nil {
		return nil, fmt.Errorf("source: list tables: %w", err)
	}
	var dataBytes int64
	for rows.Next() {
		var t Table
		var replicaKey, unlogged bool
		if err := rows.Scan(&t.Name, &t.Rows, &t.Bytes, &t.HasPrimaryKey, &replicaKey, &t.Partitioned, &unlogged); err != nil {
			return nil, fmt.Errorf("source: list tables: %w", err)
		}
		r.Tables = append(r.Tables, t)
		if !t.Partitioned {
			dataBytes += t.Bytes
		}
		// A partitioned root carries no rows; its leaves are what the
		// publication replicates.
		if !t.Partitioned && !replicaKey {
			r.NoReplicaKey = append(r.NoReplicaKey, t.Name)
		}
		if unlogged {
			r.Unlogged = append(r.Unlogged, t.Name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source: list tables: %w", err)
	}
	if err := estimateRows(ctx, conn, r.Tables); err != nil {
		return nil, err
	}
	if err := r.auditObjects(ctx, conn); err != nil {
		return nil, err
	}
	exts, err := conn.Query(ctx, `SELECT extname, extversion FROM pg_extension ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("source: list extensions: %w", err)
	}
	for exts.Next() {
		var e Extension
		if err := exts.Scan(&e.Name, &e.Version); err != nil {
			return nil, err
		}
		e.RDSVersion, e.OnRDS = rdsExtensions[e.Name]
		if !e.OnRDS {
			e.Remediation = remediation(e.Name)
		}
		e.RDSNote = rdsVersionNote(e)
		r.Extensions = append(r.Extensions, e)
	}
	if err := exts.Err(); err != nil {
		return nil, fmt.Errorf("source: list extensions: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'S' AND `+pgcatalog.UserRelation+`),
		(SELECT count(*) FROM pg_largeobject_metadata)`).Scan(&r.Sequences, &r.LargeObjects); err != nil {
		return nil, fmt.Errorf("source: count sequences and large objects: %w", err)
	}
	settings, err := snapshot.ReadDBSettings(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	for _, st := range settings {
		if st.Role == "" {
			r.DatabaseSettings = append(r.DatabaseSettings, st.Name)
		} else {
			r.RoleSettings = append(r.RoleSettings, fmt.Sprintf("%s (role %s)", st.Name, st.Role))
		}
	}
	txs, err := conn.Query(ctx, `SELECT pid, coalesce(usename, ''), (now() - xact_start)::text, coalesce(state, '')
		FROM pg_stat_activity WHERE xact_start < now() - $1::interval AND pid <> pg_backend_pid()
		  AND backend_type = 'client backend' ORDER BY xact_start`, opts.LongTransaction.String())
	if err != nil {
		return nil, fmt.Errorf("source: list long transactions: %w", err)
	}
	for txs.Next() {
		var t Transaction
		if err := txs.Scan(&t.PID, &t.User, &t.Age, &t.State); err != nil {
			return nil, err
		}
		r.LongTransactions = append(r.LongTransactions, t)
	}
	if err := txs.Err(); err != nil {
		return nil, fmt.Errorf("source: list long transactions: %w", err)
	}
	if r.Capture, err = chooseCapture(ctx, conn); err != nil {
		return nil, err
	}
	secs := float64(dataBytes) / (opts.CopyRateMBps * 1e6)
	r.EstimatedCopy = (time.Duration(secs*float64(time.Second)) + time.Second).Round(time.Second).String()
	sort.Strings(r.NoReplicaKey)
	return r, nil
}

// chooseCapture decides between logical and trigger capture the way the
// snapshot's preflight does: logical needs wal_level=logical, a role that
// may replicate, and a free slot.
func chooseCapture(ctx context.Context, conn *pgx.Conn) (Capture, error) {
	var walLevel string
	var super, repl, rdsRepl bool
	var freeSlots int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), r.rolsuper, r.rolreplication,
		EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication' AND pg_has_role(r.oid, g.oid, 'member')),
		current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&walLevel, &super, &repl, &rdsRepl, &freeSlots)
	if err != nil {
		return Capture{}, fmt.Errorf("source: read wal_level and role attributes: %w", err)
	}
	switch {
	case walLevel != "logical":
		return Capture{"trigger", fmt.Sprintf("wal_level is %s, not logical (Heroku Postgres does not offer logical replication): trigger capture needs only table ownership", walLevel)}, nil
	case !super && !repl && !rdsRepl:
		return Capture{"trigger", "the role has neither the REPLICATION attribute nor superuser, so it cannot create a replication slot: trigger capture needs only table ownership"}, nil
	case freeSlots <= 0:
		return Capture{"trigger", "no free replication slot (max_replication_slots is used up): free one or raise it to use logical capture"}, nil
	}
	return Capture{"logical", "wal_level is logical, the role may replicate and a replication slot is free"}, nil
}

func remediation(ext string) string {
	switch ext {
	case "timescaledb":
		return "not offered by RDS: convert hypertables to native partitioned tables before migrating, or choose a host that offers it"
	case "pg_stat_kcache", "pg_qualstats", "adminpack":
		return "not offered by RDS: monitoring-only; drop it on the source or leave it out of the target"
	default:
		return "not in RDS's list of extensions: check whether RDS offers it, or drop what uses it"
	}
}

// RDSExtensionsPage is where AWS lists the extensions and versions RDS for
// PostgreSQL offers per major version.
const RDSExtensionsPage = "https://docs.aws.amazon.com/AmazonRDS/latest/PostgreSQLReleaseNotes/postgresql-extensions.html"
