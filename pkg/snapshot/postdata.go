package snapshot

// Post-data per table, for the chunked copy: a table's indexes and its
// primary-key, unique and exclusion constraints are built as soon as its
// last chunk is committed, by the worker that committed it, while the
// other workers go on copying other tables (as pgcopydb does). Index
// builds and chunk copies so share the --jobs workers: at most Jobs of
// them run at once, each build with maintenance_work_mem =
// IndexMemoryMB / Jobs.
//
// Each unit's SQL is what pg_restore would run for its entries of the
// schema dump (rendered with `pg_restore --file=-`), executed in one
// target transaction that also records the unit in replicator.postdata.
// So a build killed half-way leaves nothing behind and is redone by the
// next run, and a unit recorded there is never built twice.
//
// What needs more than one table, or no copied table at all, is built
// once every table's data is complete, as one unit ("" in
// replicator.postdata): foreign keys (their check reads the referenced
// table), NOT VALID checks, triggers, rules, policies, extended
// statistics, the indexes of partitioned parents and materialized views,
// and the attachments of partition indexes to their parents.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/state"
)

// postdataDDL records the post-data units built. table_name "" is the
// remainder built after all the data.
const postdataDDL = `CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.postdata (
	table_name text PRIMARY KEY,
	done_at timestamptz NOT NULL DEFAULT now()
)`

// postdataLockKey is the first key of the advisory transaction lock
// (on the target) that one builder of a unit holds; the second is the
// hash of the unit's name.
const postdataLockKey = 0x72706464 // "rpdd"

// postData is the post-data section of the schema dump split into units.
type postData struct {
	dump      *schemaDump
	targetURL string
	memMB     int
	// byTable holds each copied table's TOC lines (INDEX and CONSTRAINT
	// entries); rest the lines of every other post-data entry.
	byTable map[string][]string
	rest    []string
	dir     string // where the unit list files are written
	// analyzed holds the tables this process has analyzed after their
	// build, so that the analyze phase does not do them again.
	analyzed sync.Map
	// notValid lists the foreign keys created NOT VALID, set by build("").
	notValid []state.ForeignKey
}

// splitPostData reads the dump's table of contents (without what
// filteredList leaves out) and assigns each index and primary-key, unique
// or exclusion constraint of a copied table to that table, by the
// object's oid on the source.
func splitPostData(ctx context.Context, dump *schemaDump, src querier, dst *pgx.Conn, targetURL string, tables []*table, memMB int) (*postData, error) {
	list, err := dump.filteredList(ctx, dst)
	if err != nil {
		return nil, err
	}
	copied := make(map[string]bool, len(tables))
	for _, t := range tables {
		copied[t.qualified()] = true
	}
	owner := map[string]string{} // "INDEX oid" or "CONSTRAINT oid" → qualified table
	rows, err := src.Query(ctx, `
		SELECT 'INDEX ' || i.indexrelid::oid::text, n.nspname, c.relname FROM pg_index i
			JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		UNION ALL
		SELECT 'CONSTRAINT ' || k.oid::text, n.nspname, c.relname FROM pg_constraint k
			JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE k.contype IN ('p', 'u', 'x')`)
	if err != nil {
		return nil, fmt.Errorf("list the source's indexes and constraints: %w", err)
	}
	for rows.Next() {
		var key, schema, name string
		if err := rows.Scan(&key, &schema, &name); err != nil {
			return nil, fmt.Errorf("list the source's indexes and constraints: %w", err)
		}
		owner[key] = pgQualified(schema, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the source's indexes and constraints: %w", err)
	}
	pd := &postData{dump: dump, targetURL: targetURL, memMB: memMB, byTable: map[string][]string{}, dir: filepath.Dir(dump.dir)}
	sc := bufio.NewScanner(bytes.NewReader(list))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		desc, oid, ok := tocDescOid(line)
		if !ok {
			continue
		}
		if t := owner[desc+" "+oid]; (desc == "INDEX" || desc == "CONSTRAINT") && copied[t] {
			pd.byTable[t] = append(pd.byTable[t], line)
			continue
		}
		pd.rest = append(pd.rest, line)
	}
	return pd, sc.Err()
}

// pgQualified is the quoted schema.name a table is known by in the copy.
func pgQualified(schema, name string) string { return (&table{Schema: schema, Name: name}).qualified() }

// tocDescOid reads the object type (INDEX, CONSTRAINT, FK CONSTRAINT, …)
// and the source oid from a TOC line "id; tableoid oid DESC namespace tag
// owner". Only INDEX and CONSTRAINT need telling apart from the rest:
// "INDEX ATTACH" and "FK CONSTRAINT" are not them.
func tocDescOid(line string) (desc, oid string, ok bool) {
	_, rest, ok := strings.Cut(line, "; ")
	if !ok {
		return "", "", false
	}
	f := strings.SplitN(rest, " ", 4)
	if len(f) < 4 {
		return "", "", false
	}
	oid, rest = f[1], f[2]+" "+f[3]
	switch {
	case strings.HasPrefix(rest, "INDEX ATTACH "):
		return "INDEX ATTACH", oid, true
	case strings.HasPrefix(rest, "INDEX "):
		return "INDEX", oid, true
	case strings.HasPrefix(rest, "CONSTRAINT "):
		return "CONSTRAINT", oid, true
	}
	return f[2], oid, true
}

// sql renders the SQL pg_restore would run for the given TOC lines.
func (pd *postData) sql(ctx context.Context, unit string, lines []string) (string, error) {
	f, err := os.CreateTemp(pd.dir, "unit-*.list")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, pd.dump.tools.pgRestore, "--section=post-data", "--use-list="+f.Name(),
		"--no-owner", "--no-privileges", "--file=-", pd.dump.dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("render the indexes and constraints of %s from the schema dump: %w: %s", unitName(unit), err, strings.TrimSpace(stderr.String()))
	}
	return stripMetaCommands(out), nil
}

// stripMetaCommands drops the psql meta-commands that pg_restore's script
// output carries since PostgreSQL 15.14 (\restrict and \unrestrict, which
// guard psql against a tampered dump): the script is run as SQL here.
func stripMetaCommands(script []byte) string {
	var b strings.Builder
	for line := range strings.SplitSeq(string(script), "\n") {
		if strings.HasPrefix(line, `\restrict `) || strings.HasPrefix(line, `\unrestrict `) {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func unitName(unit string) string {
	if unit == "" {
		return "the rest of the schema (foreign keys, triggers, parents' indexes)"
	}
	return unit
}

// build builds one unit (a table, or "" for the rest) unless it is
// recorded built or another worker builds it now (then it returns false
// at once, unless wait: then it waits for that one and builds the unit if
// that one failed). The unit's SQL and its record are one transaction.
func (pd *postData) build(ctx context.Context, unit string, wait bool) (bool, error) {
	lines := pd.rest
	if unit != "" {
		lines = pd.byTable[unit]
	}
	conn, err := connect(ctx, pd.targetURL, "target", nil)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("build the indexes of %s on the target: %w", unitName(unit), err)
	}
	defer tx.Rollback(context.Background())
	lock := `SELECT pg_try_advisory_xact_lock($1, hashtext($2))`
	if wait {
		lock = `SELECT true FROM pg_advisory_xact_lock($1, hashtext($2))`
	}
	var locked bool
	if err := tx.QueryRow(ctx, lock, int32(postdataLockKey), unit).Scan(&locked); err != nil {
		return false, fmt.Errorf("lock the post-data of %s on the target: %w", unitName(unit), err)
	}
	if !locked {
		return false, nil
	}
	var built bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM replicator.postdata WHERE table_name = $1)`, unit).Scan(&built); err != nil {
		return false, fmt.Errorf("read replicator.postdata on the target: %w", err)
	}
	if built {
		return false, nil
	}
	if len(lines) > 0 {
		script, err := pd.sql(ctx, unit, lines)
		if err != nil {
			return false, err
		}
		if unit == "" {
			script, pd.notValid = foreignKeysNotValid(script)
		}
		if _, err := tx.Exec(ctx, "SET LOCAL maintenance_work_mem = '"+strconv.Itoa(pd.memMB)+"MB'"); err != nil {
			return false, fmt.Errorf("set maintenance_work_mem on the target: %w", err)
		}
		if _, err := tx.Exec(ctx, script); err != nil {
			return false, fmt.Errorf("build the indexes and constraints of %s on the target: %w", unitName(unit), err)
		}
		if unit == "" {
			// Recorded with the final unit that created them only: a
			// unit built after it must not record them again (one
			// validated meanwhile would be pending once more).
			if err := recordPendingFKs(ctx, tx, pd.notValid); err != nil {
				return false, err
			}
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO replicator.postdata (table_name) VALUES ($1)`, unit); err != nil {
		return false, fmt.Errorf("record the post-data of %s done on the target: %w", unitName(unit), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit the indexes of %s on the target: %w", unitName(unit), err)
	}
	return true, nil
}

// foreignKeysNotValid adds NOT VALID to the foreign keys of a rendered
// script, and names them. Each chunk is read under a snapshot of its
// own, so until the stream has caught up a row may reference one that
// another chunk's older (or newer) snapshot did not hold: checking the
// keys now would fail a copy that the stream makes right. NOT VALID
// keys are enforced for every later write; `ALTER TABLE … VALIDATE
// CONSTRAINT` checks the rows once the stream has caught up. A
// partitioned table's foreign key cannot be NOT VALID before
// PostgreSQL 18: pg_dump writes it without ONLY, and it is left as is.
func foreignKeysNotValid(script string) (string, []state.ForeignKey) {
	var b strings.Builder
	var keys []state.ForeignKey
	var k *state.ForeignKey
	for line := range strings.SplitSeq(script, "\n") {
		switch {
		case strings.HasPrefix(line, "-- Name: "):
			k = nil
			if strings.Contains(line, "; Type: FK CONSTRAINT; ") {
				k = &state.ForeignKey{}
			}
		case k != nil && strings.HasPrefix(line, "ALTER TABLE ONLY "):
			k.Table = strings.TrimPrefix(line, "ALTER TABLE ONLY ")
		case k != nil && k.Table != "" && strings.HasSuffix(line, ";"):
			if name, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "ADD CONSTRAINT "), " FOREIGN KEY "); ok {
				k.Name = name
				keys = append(keys, *k)
			}
			line = strings.TrimSuffix(line, ";") + " NOT VALID;"
			k = nil
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n"), keys
}

// createPostdataLedger creates replicator.postdata if it is missing.
func createPostdataLedger(ctx context.Context, dst *pgx.Conn) error {
	if _, err := dst.Exec(ctx, postdataDDL); err != nil {
		return fmt.Errorf("create replicator.postdata on the target: %w", err)
	}
	return nil
}
