package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
)

// Database-level settings (ALTER DATABASE … SET, kept in
// pg_db_role_setting) belong to the database, not to any object pg_dump's
// schema sections hold, so an application that relies on one (a
// search_path, a statement_timeout, a time zone) would behave differently
// on the target. The snapshot sets the source database's own settings on
// the target database. Settings of a role in the database (ALTER ROLE …
// IN DATABASE … SET) name roles the target does not share: they are
// logged with the statement that would carry them, never applied.

// DBSetting is one setting of the source database.
type DBSetting struct {
	Role  string // "" for the whole database
	Name  string
	Value string // as stored: list settings hold their elements quoted
}

// Statement is the ALTER that sets it on the database named db.
func (s DBSetting) Statement(db string) string {
	value := pgutil.QuoteLiteral(s.Value)
	if listSetting[strings.ToLower(s.Name)] {
		// Stored flattened, each element already quoted as SQL needs:
		// quoting the whole would make it one element.
		value = s.Value
	}
	if s.Role != "" {
		return fmt.Sprintf("ALTER ROLE %s IN DATABASE %s SET %s = %s", pgutil.QuoteIdent(s.Role), pgutil.QuoteIdent(db), pgutil.QuoteIdent(s.Name), value)
	}
	return fmt.Sprintf("ALTER DATABASE %s SET %s = %s", pgutil.QuoteIdent(db), pgutil.QuoteIdent(s.Name), value)
}

// Settings taking a list, whose stored text is the list's SQL form
// (GUC_LIST_QUOTE in the server).
var listSetting = map[string]bool{"search_path": true, "temp_tablespaces": true, "session_preload_libraries": true,
	"shared_preload_libraries": true, "local_preload_libraries": true}

// ReadDBSettings lists the settings of the database conn is connected to:
// its own and those of roles in it.
func ReadDBSettings(ctx context.Context, conn *pgx.Conn) ([]DBSetting, error) {
	rows, err := conn.Query(ctx, `SELECT coalesce(r.rolname, ''), c.cfg
		FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) AS c(cfg)
		WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("read the source database's settings (pg_db_role_setting): %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DBSetting, error) {
		var s DBSetting
		var cfg string
		if err := r.Scan(&s.Role, &cfg); err != nil {
			return s, err
		}
		s.Name, s.Value, _ = strings.Cut(cfg, "=")
		return s, nil
	})
}

// setDatabaseSettings is the snapshot's phase: after the data and
// indexes, so a carried statement_timeout cannot cut the copy short.
func (r *run) setDatabaseSettings(ctx context.Context) error {
	settings, err := ReadDBSettings(ctx, r.src)
	if err != nil {
		return err
	}
	var db string
	if err := r.dst.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return fmt.Errorf("target: read the database name: %w", err)
	}
	for _, s := range settings {
		stmt := s.Statement(db)
		if s.Role != "" {
			// Values are never logged: a custom setting may hold a secret.
			r.log.Warn("a role's setting in the source database is not carried (the target's roles are its own): run ALTER ROLE … IN DATABASE … SET on the target if that role exists there (the source's value is in pg_db_role_setting)",
				zap.String("role", s.Role), zap.String("setting", s.Name))
			continue
		}
		if _, err := r.dst.Exec(ctx, stmt); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.InsufficientPrivilege {
				// Not worth failing hours of copy over: said loudly, with
				// the fix, and audit lists the settings too.
				r.log.Warn("the source database's setting could not be carried: the target user does not own the target database; run ALTER DATABASE … SET on the target as its owner before cutover (the source's value is in pg_db_role_setting)",
					zap.String("setting", s.Name), zap.String("database", db))
				continue
			}
			return fmt.Errorf("target: carry the source database's setting %s (ALTER DATABASE … SET): %w", s.Name, err)
		}
		r.log.Info("database setting carried to the target", zap.String("setting", s.Name))
	}
	return nil
}
