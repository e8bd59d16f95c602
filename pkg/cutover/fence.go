package cutover

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// Grant is one table privilege held by a role, as revoked by the fence and
// granted back by Unfence.
type Grant struct {
	Schema    string `json:"schema"`
	Table     string `json:"table"`
	Role      string `json:"role"` // "PUBLIC" for the pseudo-role
	Privilege string `json:"privilege"`
	Grantable bool   `json:"grantable"`
}

func (g Grant) table() string { return pgutil.QualifiedName(g.Schema, g.Table) }

func (g Grant) grantee() string {
	if g.Role == "PUBLIC" {
		return "PUBLIC"
	}
	return pgutil.QuoteIdent(g.Role)
}

// fenceRecord is the fence's row in replicator.cutover: exactly what was
// changed on the source.
type fenceRecord struct {
	Method   string   `json:"method"`
	Database string   `json:"database"`
	Roles    []string `json:"roles"`
	Revoked  []Grant  `json:"revoked,omitempty"`
	// Tables are the tables the trigger fence put its trigger on.
	Tables []string `json:"tables,omitempty"`
	// Ended are the sessions the trigger fence ended.
	Ended []endedSession `json:"ended,omitempty"`
	// PreviousReadOnly is the database's own default_transaction_read_only
	// setting before the fence ("" when it had none).
	PreviousReadOnly string `json:"previous_read_only,omitempty"`
	SessionsEnded    int    `json:"sessions_ended"`
	// FencedAt is the source's clock when the fence was made: sessions
	// started after it under read-only are read-only for their lifetime.
	FencedAt time.Time `json:"fenced_at"`
	// Rollback marks the fence a rollback put on the target (rollback.go).
	Rollback bool `json:"rollback,omitempty"`
}

// fencePlan is what a fence would do now.
type fencePlan struct {
	rec      fenceRecord
	sessions int      // sessions that would be ended
	warnings []string // e.g. superuser roles a revoke cannot stop
	denied   []string // tables the replicator's role may not put a trigger on
}

// userTables restricts pg_class c / pg_namespace n to the relations an app
// writes: the user tables of pgcatalog (ordinary, partitioned and their
// partitions), and views and foreign tables under the same rules (an
// updatable view writes its table with its owner's rights). Extension
// members are not the app's: the migration does not carry their rows, and
// they are often a superuser's, whom a revoke cannot stop anyway.
var userTables = pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.AllTables, Also: []pgcatalog.Kind{pgcatalog.View, pgcatalog.Foreign}})

// writePrivileges are the privileges the fence takes away.
var writePrivileges = []string{"INSERT", "UPDATE", "DELETE", "TRUNCATE"}

// planFence works out the fence from the source's catalog; it changes
// nothing.
func planFence(ctx context.Context, src *pgx.Conn, cfg *Config) (*fencePlan, error) {
	p := &fencePlan{rec: fenceRecord{Method: cfg.FenceMethod}}
	if p.rec.Method == FenceAuto && len(cfg.AppRoles) > 0 {
		p.rec.Method = FenceRevoke // the roles were named to be fenced by role
	}
	if p.rec.Method == FenceAuto || p.rec.Method == FenceTrigger {
		if err := src.QueryRow(ctx, `SELECT current_database(), now()`).Scan(&p.rec.Database, &p.rec.FencedAt); err != nil {
			return nil, fmt.Errorf("source: read the current database: %w", err)
		}
		if err := planTriggerFence(ctx, src, p); err != nil {
			return nil, err
		}
		if len(p.denied) == 0 {
			p.rec.Method = FenceTrigger
			if err := src.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity a WHERE `+openTableWriters).Scan(&p.sessions); err != nil {
				return nil, fmt.Errorf("source: count the open write transactions: %w", err)
			}
			return p, nil
		}
		if p.rec.Method == FenceTrigger {
			return nil, fmt.Errorf("cutover: the replicator's role may not create triggers on %s (it must own them or hold TRIGGER): make it their owner, or pass --fence-method revoke with the app's roles in --app-roles",
				strings.Join(first(p.denied, 5), ", "))
		}
		// auto: the role does not own every table, so the app has roles
		// of its own: revoke theirs.
		*p = fencePlan{rec: fenceRecord{Method: FenceRevoke}}
	}
	var self string
	// FencedAt is taken now, before the record is saved: a little early
	// is harmless (Unfence ends a few more sessions), late would not be.
	if err := src.QueryRow(ctx, `SELECT current_database(), current_user, now()`).
		Scan(&p.rec.Database, &self, &p.rec.FencedAt); err != nil {
		return nil, fmt.Errorf("source: read the current role: %w", err)
	}
	if len(cfg.AppRoles) > 0 {
		rows, err := src.Query(ctx, `SELECT r FROM unnest($1::text[]) r WHERE r <> 'PUBLIC' AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)`, cfg.AppRoles)
		if err != nil {
			return nil, fmt.Errorf("source: look up --app-roles: %w", err)
		}
		missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("source: look up --app-roles: %w", err)
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("cutover: --app-roles names %s, which the source does not have: list the roles the app logs in with (see \\du in psql)", strings.Join(missing, ", "))
		}
	}

	rows, err := src.Query(ctx, `SELECT n.nspname, c.relname, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable,
			coalesce(r.rolsuper, false)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
		LEFT JOIN pg_roles r ON r.oid = a.grantee
		WHERE `+userTables+` AND a.privilege_type = ANY($1)
		ORDER BY 3, 1, 2, 4`, writePrivileges)
	if err != nil {
		return nil, fmt.Errorf("source: read table privileges: %w", err)
	}
	type held struct {
		g     Grant
		super bool
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (held, error) {
		var h held
		return h, r.Scan(&h.g.Schema, &h.g.Table, &h.g.Role, &h.g.Privilege, &h.g.Grantable, &h.super)
	})
	if err != nil {
		return nil, fmt.Errorf("source: read table privileges: %w", err)
	}
	want := func(role string) bool {
		if len(cfg.AppRoles) > 0 {
			return slices.Contains(cfg.AppRoles, role)
		}
		return role != self
	}
	roles := map[string]bool{}
	supers := map[string]bool{}
	for _, h := range all {
		if !want(h.g.Role) {
			continue
		}
		if h.super {
			supers[h.g.Role] = true
			continue
		}
		roles[h.g.Role] = true
		if p.rec.Method == FenceRevoke {
			p.rec.Revoked = append(p.rec.Revoked, h.g)
		}
	}
	for _, r := range cfg.AppRoles {
		roles[r] = true // named roles' sessions are ended even if they hold no privilege
	}
	for r := range supers {
		delete(roles, r)
		p.warnings = append(p.warnings, fmt.Sprintf("role %s is a superuser: revoking privileges does not stop it; stop that client yourself", r))
	}
	for r := range roles {
		p.rec.Roles = append(p.rec.Roles, r)
	}
	sort.Strings(p.rec.Roles)
	sort.Strings(p.warnings)

	if p.rec.Method == FenceRevoke && len(p.rec.Revoked) == 0 {
		return nil, fmt.Errorf("cutover: no role other than the replicator's own (%s) may write to the source's tables, so revoking cannot fence the app: "+
			"if the app logs in as %s too, pass --fence-method trigger (the default, auto, picks it when %s owns the tables); else name its roles with --app-roles", self, self, self)
	}
	if p.rec.Method == FenceReadOnly {
		var prev *string
		err := src.QueryRow(ctx, `SELECT (SELECT s FROM pg_db_role_setting d, unnest(d.setconfig) s
			WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND d.setrole = 0
			AND s LIKE 'default\_transaction\_read\_only=%')`).Scan(&prev)
		if err != nil {
			return nil, fmt.Errorf("source: read the database's settings: %w", err)
		}
		if prev != nil {
			p.rec.PreviousReadOnly = strings.TrimPrefix(*prev, "default_transaction_read_only=")
		}
	}
	if err := src.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity a WHERE `+sessionsToEnd, p.rec.Roles, p.rec.Method).
		Scan(&p.sessions); err != nil {
		return nil, fmt.Errorf("source: count the app's sessions: %w", err)
	}
	return p, nil
}

// sessionsToEnd selects, in pg_stat_activity a, the client sessions of
// this database the fence ends ($1 roles, $2 method): never this session
// nor any of the replicator's own role (its walsender and capture); under
// revoke the members of the fenced roles (superusers are members of every
// role, but a revoke does not stop them, so they are left alone), under
// read-only every other session.
const sessionsToEnd = `a.datname = current_database() AND a.backend_type = 'client backend'
	AND a.pid <> pg_backend_pid() AND a.usename <> current_user
	AND ($2 = 'read-only' OR (NOT coalesce((SELECT rolsuper FROM pg_roles WHERE oid = a.usesysid), false)
		AND ('PUBLIC' = ANY($1) OR EXISTS (SELECT 1 FROM unnest($1::text[]) r
			WHERE pg_has_role(a.usesysid, (SELECT oid FROM pg_roles WHERE rolname = r), 'MEMBER')))))`

// applyFence makes the recorded change on the source in one transaction,
// then ends the app's sessions. It may be repeated: revoking what is
// already revoked, or setting the setting again, changes nothing.
func applyFence(ctx context.Context, src *pgx.Conn, rec *fenceRecord) (int, error) {
	if rec.Method == FenceTrigger {
		ended, err := applyTriggerFence(ctx, src, rec)
		rec.Ended = append(rec.Ended, ended...)
		return len(ended), err
	}
	err := pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		switch rec.Method {
		case FenceRevoke:
			for _, g := range rec.Revoked {
				q := fmt.Sprintf("REVOKE %s ON TABLE %s FROM %s", g.Privilege, g.table(), g.grantee())
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("source: %s: %w", q, err)
				}
			}
		case FenceReadOnly:
			q := "ALTER DATABASE " + pgutil.QuoteIdent(rec.Database) + " SET default_transaction_read_only = on"
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("source: %s: %w: the replicator's role must own the database (or use --fence-method revoke)", q, err)
			}
		}
		if rec.FencedAt.IsZero() {
			return tx.QueryRow(ctx, `SELECT now()`).Scan(&rec.FencedAt)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if rec.Method == FenceRevoke {
		if err := checkRevoked(ctx, src, rec); err != nil {
			return 0, err
		}
	}
	var ended int
	if err := src.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid)) FROM pg_stat_activity a WHERE `+sessionsToEnd,
		rec.Roles, rec.Method).Scan(&ended); err != nil {
		return 0, fmt.Errorf("source: end the app's sessions: %w: grant the replicator's role pg_signal_backend, or stop the app yourself (e.g. heroku ps:scale web=0 worker=0) and run again", err)
	}
	return ended, nil
}

// checkRevoked makes sure no fenced role can still write to a user table:
// a REVOKE by a role that is not the grantor only warns, and a role may
// hold privileges through another role or PUBLIC.
func checkRevoked(ctx context.Context, src *pgx.Conn, rec *fenceRecord) error {
	rows, err := src.Query(ctx, `SELECT r, format('%I.%I', n.nspname, c.relname)
		FROM unnest($1::text[]) r, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+userTables+` AND r <> 'PUBLIC' AND has_table_privilege(r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
		ORDER BY 1, 2 LIMIT 5`, rec.Roles)
	if err != nil {
		return fmt.Errorf("source: check the fence: %w", err)
	}
	left, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var role, table string
		err := r.Scan(&role, &table)
		return role + " on " + table, err
	})
	if err != nil {
		return fmt.Errorf("source: check the fence: %w", err)
	}
	if len(left) > 0 {
		return fmt.Errorf("cutover: the fence is incomplete, these may still write: %s: they hold the privilege through another role, PUBLIC, or a grant the replicator's role did not make; "+
			"name the granting roles in --app-roles (or use --fence-method read-only) after undoing this attempt with --unfence", strings.Join(left, ", "))
	}
	return nil
}

// openWriters counts transactions of this database, other than this
// session's, that hold a transaction id: they wrote and may still commit.
func openWriters(ctx context.Context, src *pgx.Conn) (int, error) {
	var n int
	err := src.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL AND backend_type = 'client backend'`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("source: look for open write transactions: %w", err)
	}
	return n, nil
}

// undoFence restores exactly what rec says was changed. Privileges on a
// table dropped since are reported, not an error.
func undoFence(ctx context.Context, src *pgx.Conn, rec *fenceRecord) (restored int, gone []string, ended int, err error) {
	if rec.Method == FenceTrigger {
		restored, gone, err = undoTriggerFence(ctx, src, rec.Tables)
		return restored, gone, 0, err
	}
	err = pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		switch rec.Method {
		case FenceRevoke:
			for _, g := range rec.Revoked {
				var exists bool
				if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, g.table()).Scan(&exists); err != nil {
					return fmt.Errorf("source: look up %s: %w", g.table(), err)
				}
				if !exists {
					gone = append(gone, g.table())
					continue
				}
				q := fmt.Sprintf("GRANT %s ON TABLE %s TO %s", g.Privilege, g.table(), g.grantee())
				if g.Grantable {
					q += " WITH GRANT OPTION"
				}
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("source: %s: %w", q, err)
				}
				restored++
			}
		case FenceReadOnly:
			q := "ALTER DATABASE " + pgutil.QuoteIdent(rec.Database) + " RESET default_transaction_read_only"
			if rec.PreviousReadOnly != "" {
				q = "ALTER DATABASE " + pgutil.QuoteIdent(rec.Database) + " SET default_transaction_read_only = " +
					pgutil.QuoteLiteral(rec.PreviousReadOnly)
			}
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("source: %s: %w", q, err)
			}
			restored = 1
		default:
			return fmt.Errorf("the fence record in replicator.cutover has unknown method %q: restore the source's write access by hand", rec.Method)
		}
		return nil
	})
	if err != nil || rec.Method != FenceReadOnly {
		return restored, slices.Compact(gone), 0, err
	}
	// Sessions that started under the fence stay read-only until they
	// reconnect: end them (the app's pool reconnects writable).
	if err := src.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid)) FROM pg_stat_activity a
		WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
		AND a.usename <> current_user AND a.backend_start >= $1`, rec.FencedAt).Scan(&ended); err != nil {
		return restored, nil, 0, fmt.Errorf("source: end the sessions that started read-only under the fence: %w: end them yourself (or restart the app)", err)
	}
	return restored, nil, ended, nil
}

// describeRevokes summarises grants per role for a person.
func describeRevokes(gs []Grant) string {
	byRole := map[string]map[string]bool{}
	var order []string
	for _, g := range gs {
		if byRole[g.Role] == nil {
			byRole[g.Role] = map[string]bool{}
			order = append(order, g.Role)
		}
		byRole[g.Role][g.table()] = true
	}
	var parts []string
	for _, r := range order {
		n := 0
		for _, g := range gs {
			if g.Role == r {
				n++
			}
		}
		parts = append(parts, fmt.Sprintf("%s: %d privileges on %d tables", r, n, len(byRole[r])))
	}
	return strings.Join(parts, "; ")
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}
