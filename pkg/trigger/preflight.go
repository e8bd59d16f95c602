package trigger

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// CheckPrivileges tells whether the connected role can run trigger
// capture: PostgreSQL 13 or later, CREATE on the database (or schema
// replicator already its own), and on every captured table ownership or
// the TRIGGER privilege. The error names what is missing and the fix; nil
// means Install will succeed as far as rights go.
func CheckPrivileges(ctx context.Context, conn *pgx.Conn) error {
	if err := checkVersion(ctx, conn); err != nil {
		return err
	}
	var user string
	var canCreate, ownSchema bool
	err := conn.QueryRow(ctx, `SELECT current_user, has_database_privilege(current_database(), 'CREATE'),
		coalesce((SELECT pg_has_role(current_user, nspowner, 'USAGE') FROM pg_namespace WHERE nspname = $1), false)`,
		state.Schema).Scan(&user, &canCreate, &ownSchema)
	if err != nil {
		return fmt.Errorf("read the source role's privileges: %w", err)
	}
	var probs []string
	if !canCreate && !ownSchema {
		probs = append(probs, fmt.Sprintf("user %q cannot create schema replicator: GRANT CREATE ON DATABASE to it", user))
	}
	// Every user table, partitions included: Install puts a TRUNCATE
	// trigger on each.
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.AllTables})+`
		  AND NOT (pg_has_role(current_user, c.relowner, 'USAGE') OR has_table_privilege(c.oid, 'TRIGGER'))
		ORDER BY 1, 2`)
	if err != nil {
		return fmt.Errorf("read table privileges on the source: %w", err)
	}
	denied, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var nsp, name string
		err := r.Scan(&nsp, &name)
		return pgutil.QualifiedName(nsp, name), err
	})
	if err != nil {
		return fmt.Errorf("read table privileges on the source: %w", err)
	}
	if len(denied) > 0 {
		list := denied
		if len(list) > 10 {
			list = append(list[:10:10], fmt.Sprintf("and %d more", len(denied)-10))
		}
		probs = append(probs, fmt.Sprintf("user %q neither owns nor holds TRIGGER on %s: connect as the tables' owner or GRANT TRIGGER ON them", user, strings.Join(list, ", ")))
	}
	if len(probs) > 0 {
		return fmt.Errorf("trigger capture is not possible on the source: %s", strings.Join(probs, "; "))
	}
	return nil
}

// Choose resolves `--capture auto`: logical when the source can create a
// slot for this role (superuser, REPLICATION attribute, or rds_replication
// membership), has wal_level=logical and a free slot; else trigger. The
// reason is one line for the person running the command.
func Choose(ctx context.Context, conn *pgx.Conn) (mode, reason string, err error) {
	var user, walLevel string
	var super, repl, rdsRepl bool
	var maxSlots, usedSlots int
	err = conn.QueryRow(ctx, `SELECT current_user, current_setting('wal_level'), r.rolsuper, r.rolreplication,
		coalesce((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = 'rds_replication'), false),
		current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&user, &walLevel, &super, &repl, &rdsRepl, &maxSlots, &usedSlots)
	if err != nil {
		return "", "", fmt.Errorf("read the source's replication settings: %w", err)
	}
	switch {
	case !super && !repl && !rdsRepl:
		return state.CaptureTrigger, fmt.Sprintf("capture: trigger, because user %q may not create replication slots (no superuser, REPLICATION or rds_replication)", user), nil
	case walLevel != "logical":
		return state.CaptureTrigger, fmt.Sprintf("capture: trigger, because the source runs wal_level=%s (logical decoding needs wal_level=logical)", walLevel), nil
	case usedSlots >= maxSlots:
		return state.CaptureTrigger, fmt.Sprintf("capture: trigger, because all %d replication slots of the source are in use (max_replication_slots)", maxSlots), nil
	}
	return state.CaptureLogical, fmt.Sprintf("capture: logical, because user %q may create a slot, wal_level=logical and %d of %d slots are free", user, maxSlots-usedSlots, maxSlots), nil
}
