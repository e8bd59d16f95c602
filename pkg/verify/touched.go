package verify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/pgutil"
)

// The touched-row logs behind the incremental mode (Config.Touched). Track
// puts, on every table of one side, an ALWAYS row trigger that appends the
// primary key of each row it inserts, updates or deletes (both keys when
// an update moves it) to table replicator.verify_touched, and a TRUNCATE
// trigger that
// marks the whole table. They fire ALWAYS, also under
// session_replication_role = replica, so the target's apply and anyone
// writing to the target directly are logged alike, and so are sessions on
// the source that bypass trigger capture. The tables carrying the triggers
// are listed in replicator.verify_tracked: a table created afterwards has
// no trigger and is compared whole. All of it lives in schema replicator,
// the tool's bookkeeping, which no copy, capture or fence counts among the
// application's tables, and which cleanup removes with what depends on it.
const (
	logTable      = "replicator.verify_touched"
	trackedTable  = "replicator.verify_tracked"
	touchFunc     = "replicator.verify_touch"
	trackTrigger  = "replicator_verify_touch"
	trackTruncate = "replicator_verify_truncate"
)

// touchBatch is how many keys one round trip compares: it bounds the rows
// held in memory per side.
const touchBatch = 1000

var trackDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS replicator`,
	// UNLOGGED: no WAL, so the log costs the app's writes less, and a
	// logical stream's FOR ALL TABLES publication does not carry the
	// source's log into the target's. A crash empties it; the sentinel
	// row Track writes is then gone too, and the log counts as missing
	// (ErrNoTouchedLog: cutover then compares everything).
	`DROP TABLE IF EXISTS ` + logTable,
	`CREATE UNLOGGED TABLE ` + logTable + ` (
		sch text NOT NULL, rel text NOT NULL,
		key jsonb, -- NULL: the whole table (TRUNCATE, or no primary key)
		xid xid8 NOT NULL DEFAULT pg_current_xact_id())`,
	`CREATE TABLE IF NOT EXISTS ` + trackedTable + ` (sch text NOT NULL, rel text NOT NULL, PRIMARY KEY (sch, rel))`,
	// SECURITY DEFINER: the app's roles need no privilege on the log.
	// TG_ARGV holds the key's column names; none: a table without a key,
	// logged whole.
	`CREATE OR REPLACE FUNCTION ` + touchFunc + `() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
	DECLARE
		k_old jsonb;
		k_new jsonb;
	BEGIN
		IF TG_OP = 'TRUNCATE' OR TG_NARGS = 0 THEN
			INSERT INTO ` + logTable + `  (sch, rel, key) VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, NULL);
			RETURN NULL;
		END IF;
		IF TG_OP <> 'INSERT' THEN
			SELECT jsonb_object_agg(c, to_jsonb(OLD) -> c) INTO k_old FROM unnest(TG_ARGV) c;
		END IF;
		IF TG_OP <> 'DELETE' THEN
			SELECT jsonb_object_agg(c, to_jsonb(NEW) -> c) INTO k_new FROM unnest(TG_ARGV) c;
		END IF;
		IF k_old IS NOT NULL AND k_old IS DISTINCT FROM k_new THEN
			INSERT INTO ` + logTable + `  (sch, rel, key) VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, k_old);
		END IF;
		IF k_new IS NOT NULL THEN
			INSERT INTO ` + logTable + `  (sch, rel, key) VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, k_new);
		END IF;
		RETURN NULL;
	END $f$`,
}

// Track starts a touched-row log on one side (name "source" or "target")
// of every table a verification compares, in one transaction, and empties
// the log: what it holds afterwards is what changed since this call.
// Repeating it starts the log again. It returns the number of tables
// tracked. Creating the triggers takes each table's SHARE ROW EXCLUSIVE
// lock until the transaction ends: it waits at most 2 s for write
// transactions open on a table, and tries again (up to 5 times) when
// that runs out or it deadlocks with an app transaction that writes the
// same tables in another order; then it fails and changes nothing.
func Track(ctx context.Context, url, name string) (int, error) {
	s, err := openSide(ctx, url, name, 1)
	if err != nil {
		return 0, err
	}
	defer s.pool.Close()
	rels, err := loadRelations(ctx, s)
	if err != nil {
		return 0, err
	}
	for attempt := 1; ; attempt++ {
		err := track(ctx, s, rels)
		var pgErr *pgconn.PgError
		if err == nil {
			return len(rels), nil
		}
		if attempt == 5 || !errors.As(err, &pgErr) || (pgErr.Code != pgerrcode.LockNotAvailable && pgErr.Code != pgerrcode.DeadlockDetected) {
			return 0, fmt.Errorf("verify: start the touched-row log on the %s: %w (the role needs to own the tables; else pass --verify full-in-freeze)", name, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
}

func track(ctx context.Context, s *side, rels map[string]*relation) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	// The session is read-only by default (sessionSettings); this one
	// transaction writes.
	stmts := append([]string{`SET TRANSACTION READ WRITE`, `SET LOCAL lock_timeout = '2s'`}, trackDDL...)
	stmts = append(stmts, `TRUNCATE `+trackedTable, `INSERT INTO `+logTable+` (sch, rel) VALUES ('', '')`)
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return err
		}
	}
	// Each CREATE TRIGGER locks its table until the commit. In a fixed
	// order (schema, name), two trackers cannot deadlock with each other,
	// nor with a transaction writing the tables in that order; in a map's
	// random order they could, a different way each run.
	for _, r := range trackOrder(rels) {
		q := pgutil.QualifiedName(r.schema, r.name)
		args := make([]string, len(r.key))
		for i, k := range r.key {
			args[i] = pgutil.QuoteLiteral(k)
		}
		for _, stmt := range []string{
			fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", trackTrigger, q),
			fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s(%s)", trackTrigger, q, touchFunc, strings.Join(args, ", ")),
			fmt.Sprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", q, trackTrigger),
			fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", trackTruncate, q),
			fmt.Sprintf("CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()", trackTruncate, q, touchFunc),
			fmt.Sprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", q, trackTruncate),
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("table %s: %w", displayName(r.schema, r.name), err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+trackedTable+` VALUES ($1, $2)`, r.schema, r.name); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// trackOrder is rels sorted by schema, then name: the order track locks
// them in.
func trackOrder(rels map[string]*relation) []*relation {
	return slices.SortedFunc(maps.Values(rels), func(a, b *relation) int {
		return cmp.Or(strings.Compare(a.schema, b.schema), strings.Compare(a.name, b.name))
	})
}

// Untrack removes the touched-row log from one side: its triggers,
// function and tables. Without one it does nothing; it may be repeated.
func Untrack(ctx context.Context, url, name string) error {
	s, err := openSide(ctx, url, name, 1)
	if err != nil {
		return err
	}
	defer s.pool.Close()
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, trackedTable).Scan(&exists); err != nil || !exists {
		return err
	}
	// DROP FUNCTION ... CASCADE drops every trigger calling it; the lock
	// timeout keeps a long transaction on a table from holding it up.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	for _, q := range []string{`SET TRANSACTION READ WRITE`, `SET LOCAL lock_timeout = '10s'`, `DROP FUNCTION IF EXISTS ` + touchFunc + `() CASCADE`, `DROP TABLE IF EXISTS ` + logTable + `, ` + trackedTable} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("verify: remove the touched-row log on the %s: %w", name, err)
		}
	}
	return tx.Commit(ctx)
}

// touchedLog is what one side's log says about its tables.
type touchedLog struct {
	present bool            // the side has a log at all
	tracked map[string]bool // schema.name carrying the triggers
	whole   map[string]bool // schema.name logged whole (TRUNCATE, no key)
	keyed   map[string]bool // schema.name with logged keys
}

func readTouchedLog(ctx context.Context, s *side) (*touchedLog, error) {
	l := &touchedLog{tracked: map[string]bool{}, whole: map[string]bool{}, keyed: map[string]bool{}}
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, logTable).Scan(&l.present); err != nil {
		return nil, fmt.Errorf("read the touched-row log on the %s: %w", s.name, err)
	}
	if !l.present {
		return l, nil
	}
	// The sentinel: without it the log was emptied by a crash.
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM `+logTable+` WHERE sch = '' AND rel = '')`).Scan(&l.present); err != nil || !l.present {
		return l, err
	}
	for q, m := range map[string]map[string]bool{
		`SELECT sch, rel FROM ` + trackedTable:                                           l.tracked,
		`SELECT DISTINCT sch, rel FROM ` + logTable + ` WHERE key IS NULL AND rel <> ''`: l.whole,
		`SELECT sch, rel FROM ` + logTable + ` WHERE key IS NOT NULL GROUP BY sch, rel`:  l.keyed,
	} {
		rows, err := s.pool.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("read the touched-row log on the %s: %w", s.name, err)
		}
		for rows.Next() {
			var sch, rel string
			if err := rows.Scan(&sch, &rel); err != nil {
				rows.Close()
				return nil, err
			}
			m[sch+"."+rel] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read the touched-row log on the %s: %w", s.name, err)
		}
	}
	return l, nil
}

// ErrNoTouchedLog is returned by an incremental run when either side has
// no touched-row log (Track was not run, or the log was removed).
var ErrNoTouchedLog = errors.New("verify: no touched-row log on both sides: run a full verification instead")

// compareTouched compares, of a table whose every row was proven
// identical when the logs started, only the rows either side's log names
// since: keys read from each log in batches, each batch's rows fetched
// from both sides by primary key. A table without a key, truncated, or
// not tracked on both sides is compared whole.
func (c *comparer) compareTouched(ctx context.Context, t *tableRun, src, tgt *touchedLog) error {
	q := t.p.src.qualified()
	if t.key == nil || !src.tracked[q] || !tgt.tracked[q] || src.whole[q] || tgt.whole[q] {
		t.res.Whole = true
		return c.compareTable(ctx, t)
	}
	t.res.Mode = "touched rows"
	names := make([]string, len(t.key))
	for i, k := range t.key {
		names[i] = quoteIfNeeded(k.name)
	}
	t.res.Key = strings.Join(names, ", ")
	// Most keys are in both logs (the stream writes on the target what
	// the source logged): compare each once. The set of keys seen is
	// bounded; past maxSeen a key may be compared twice, which costs time,
	// never a difference.
	seen := map[string]bool{}
	if src.keyed[q] {
		if err := c.compareLogged(ctx, t, c.src, seen, true); err != nil {
			return err
		}
	}
	if tgt.keyed[q] {
		if err := c.compareLogged(ctx, t, c.tgt, seen, false); err != nil {
			return err
		}
	}
	return nil
}

// maxSeen bounds the keys remembered to compare each once (about 100 bytes
// each).
const maxSeen = 1 << 20

// compareLogged compares the rows one side's log names for table t, but
// those in seen; with record it adds its keys to seen. The log is read on
// its own connection while up to Config.Jobs batches are compared on
// others.
func (c *comparer) compareLogged(ctx context.Context, t *tableRun, logSide *side, seen map[string]bool, record bool) error {
	rows, err := logSide.pool.Query(ctx, `SELECT DISTINCT key::text FROM `+logTable+` WHERE sch = $1 AND rel = $2 AND key IS NOT NULL`,
		t.p.src.schema, t.p.src.name)
	if err != nil {
		return fmt.Errorf("read the touched-row log of %s on the %s: %w", t.name, logSide.name, err)
	}
	defer rows.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, c.cfg.Jobs/2)) // each batch holds one connection per side
	batch := make([]json.RawMessage, 0, touchBatch)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		keys, _ := json.Marshal(batch)
		batch = make([]json.RawMessage, 0, touchBatch)
		g.Go(func() error {
			return t.probe(gctx, func(ctx context.Context, emit func(RowDiff)) error {
				return c.compareKeys(ctx, t, keys, emit)
			})
		})
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return fmt.Errorf("read the touched-row log of %s on the %s: %w", t.name, logSide.name, err)
		}
		if seen[k] {
			continue
		}
		if record && len(seen) < maxSeen {
			seen[k] = true
		}
		batch = append(batch, json.RawMessage(k))
		t.res.RowsCompared++
		if len(batch) == touchBatch {
			flush()
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the touched-row log of %s on the %s: %w", t.name, logSide.name, err)
	}
	flush()
	return g.Wait()
}

// compareKeys fetches the rows with the given keys (a JSON array of
// objects, column name to value) from both sides and compares them.
func (c *comparer) compareKeys(ctx context.Context, t *tableRun, keys []byte, emit func(RowDiff)) error {
	parts := make([]string, len(t.key))
	for i, k := range t.key {
		parts[i] = fmt.Sprintf("(v ->> %s)::%s", pgutil.QuoteLiteral(k.name), k.typ)
	}
	tuple := func(e []string) string {
		if len(e) == 1 {
			return e[0]
		}
		return "(" + strings.Join(e, ", ") + ")"
	}
	cols := make([]string, len(t.key))
	for i, k := range t.key {
		cols[i] = pgutil.QuoteIdent(k.name)
	}
	q := fmt.Sprintf(`SELECT ARRAY[%s], %s FROM %s WHERE %s IN (SELECT %s FROM jsonb_array_elements($1::jsonb) AS e(v))`,
		keyTexts(t.key), columnHashes(t.p.cols), t.from, tuple(cols), strings.Join(parts, ", "))
	var src, tgt []keyedRow
	fetch := func(s *side, out *[]keyedRow) error {
		rows, err := s.pool.Query(ctx, q, string(keys))
		if err != nil {
			return fmt.Errorf("fetch touched rows of %s on the %s: %w", t.name, s.name, err)
		}
		defer rows.Close()
		for rows.Next() {
			var kr keyedRow
			if err := rows.Scan(&kr.key, &kr.hashes); err != nil {
				return fmt.Errorf("fetch touched rows of %s on the %s: %w", t.name, s.name, err)
			}
			*out = append(*out, kr)
		}
		return rows.Err()
	}
	g, gctx := errgroup.WithContext(ctx)
	ctx = gctx
	g.Go(func() error { return fetch(c.src, &src) })
	g.Go(func() error { return fetch(c.tgt, &tgt) })
	if err := g.Wait(); err != nil {
		return err
	}
	c.countRows(t, int64(len(src)), int64(len(tgt)))
	for _, d := range diffKeyed(t.key, t.p.cols, src, tgt) {
		emit(d)
	}
	return nil
}

// setAsideLogged moves the differences of rows either touched-row log
// names out of the tables' results into rep.InFlight (see
// Config.InFlightLogged). A table whose differences were not all kept in
// memory keeps them all: they cannot all be looked up.
func (c *comparer) setAsideLogged(ctx context.Context, runs []*tableRun, rep *Report) error {
	for _, t := range runs {
		if len(t.diffs) == 0 || t.total > int64(len(t.diffs)) || t.key == nil {
			continue
		}
		pairs := make([]string, len(t.key))
		for i, k := range t.key {
			pairs[i] = fmt.Sprintf("%s, $%d::%s", pgutil.QuoteLiteral(k.name), i+3, k.typ)
		}
		q := `SELECT EXISTS (SELECT FROM ` + logTable + ` WHERE sch = $1 AND rel = $2 AND key = jsonb_build_object(` + strings.Join(pairs, ", ") + `))`
		var keep []RowDiff
		for _, d := range t.diffs {
			logged := false
			for _, s := range []*side{c.src, c.tgt} {
				if d.keyVals == nil || logged {
					break
				}
				args := []any{t.p.src.schema, t.p.src.name}
				for _, v := range d.keyVals {
					args = append(args, v)
				}
				if err := s.pool.QueryRow(ctx, q, args...).Scan(&logged); err != nil {
					return fmt.Errorf("look up %s %s in the touched-row log on the %s: %w", t.name, d.Key, s.name, err)
				}
			}
			if !logged {
				keep = append(keep, d)
				continue
			}
			if rep.InFlight == nil {
				rep.InFlight = map[string][]RowDiff{}
			}
			if len(rep.InFlight[t.res.Table]) < c.cfg.MaxRowsReported {
				rep.InFlight[t.res.Table] = append(rep.InFlight[t.res.Table], d)
			}
		}
		t.diffs, t.total = keep, int64(len(keep))
	}
	return nil
}
