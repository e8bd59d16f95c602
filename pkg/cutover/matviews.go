package cutover

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// refreshMatViews refreshes every populated materialized view of the
// target, oldest first (a view built on another was created after it).
// Neither capture carries them: on the target they hold what the
// snapshot's schema restore computed, however long ago. Run once the
// stream has drained, so they are computed from the final data. It
// returns the names refreshed.
func refreshMatViews(ctx context.Context, tgt *pgx.Conn) ([]string, error) {
	rows, err := tgt.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'm' AND c.relispopulated AND `+pgcatalog.UserRelation+` ORDER BY c.oid`)
	if err != nil {
		return nil, fmt.Errorf("target: list materialized views: %w", err)
	}
	type view struct{ schema, name string }
	views, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (view, error) {
		var v view
		return v, r.Scan(&v.schema, &v.name)
	})
	if err != nil {
		return nil, fmt.Errorf("target: list materialized views: %w", err)
	}
	var done []string
	for _, v := range views {
		name := pgutil.QualifiedName(v.schema, v.name)
		if _, err := tgt.Exec(ctx, "REFRESH MATERIALIZED VIEW "+name); err != nil {
			return done, fmt.Errorf("target: REFRESH MATERIALIZED VIEW %s: %w: fix it there and run cutover again", name, err)
		}
		done = append(done, displayName(v.schema, v.name))
	}
	return done, nil
}
