package verify

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	"replicator/pkg/pgcatalog"
)

// column is one column of a table.
type column struct {
	name       string
	typ        string // format_type without typmod, usable in a cast
	collatable bool
	cCollated  bool  // its ordering is byte order already (collation C or POSIX)
	typOID     int64 // pg_type oid of the column's type
	sameType   bool  // of the same type on both sides (set when paired)
}

// relation is one table as one side's catalog describes it.
type relation struct {
	schema, name string
	root         string // schema.name of the partition root, or "" when not a partition
	reltuples    float64
	pages        int64    // blocks of the main fork now
	cols         []column // sorted by name
	key          []string // primary key columns in index order
	correlation  *float64 // pg_stats correlation of the leading key column
}

func (r *relation) qualified() string { return r.schema + "." + r.name }

// estRows estimates the rows of the relation without reading it.
func (r *relation) estRows() int64 {
	if r.reltuples >= 0 {
		return int64(r.reltuples)
	}
	// Never analysed: assume ~100 bytes a row.
	return r.pages * 80
}

// catalogSQL lists the user tables that hold rows (pgcatalog.RowTables):
// ordinary tables and partitions; partitioned parents hold no rows of
// their own and are compared through their partitions. Extension members
// are left out: the snapshot does not copy them either.
var catalogSQL = `
SELECT n.nspname, c.relname, c.reltuples::float8,
       (pg_relation_size(c.oid) / current_setting('block_size')::int8),
       coalesce((SELECT rn.nspname || '.' || r.relname FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
                 WHERE c.relispartition AND r.oid = pg_partition_root(c.oid)), ''),
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
       (SELECT array_agg(a.attname::text ORDER BY a.attname COLLATE "C") FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(format_type(a.atttypid, NULL) ORDER BY a.attname COLLATE "C") FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(a.atttypid::int8 ORDER BY a.attname COLLATE "C") FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(CASE WHEN a.attcollation = 0 THEN 'n'
                              WHEN co.collname IN ('C', 'POSIX') THEN 'c'
                              WHEN co.collname = 'default' AND (SELECT datcollate FROM pg_database WHERE datname = current_database()) IN ('C', 'POSIX') THEN 'c'
                              ELSE 'y' END ORDER BY a.attname COLLATE "C")
          FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE ` + pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.RowTables}) + `
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`

func loadRelations(ctx context.Context, s *side) (map[string]*relation, error) {
	rows, err := s.pool.Query(ctx, catalogSQL)
	if err != nil {
		return nil, fmt.Errorf("list the tables of the %s: %w", s.name, err)
	}
	defer rows.Close()
	out := map[string]*relation{}
	for rows.Next() {
		r := &relation{}
		var names, types, colls []string
		var oids []int64
		if err := rows.Scan(&r.schema, &r.name, &r.reltuples, &r.pages, &r.root, &r.key, &names, &types, &oids, &colls); err != nil {
			return nil, fmt.Errorf("list the tables of the %s: %w", s.name, err)
		}
		for i := range names {
			r.cols = append(r.cols, column{name: names[i], typ: types[i], typOID: oids[i], collatable: colls[i] != "n", cCollated: colls[i] == "c"})
		}
		out[r.qualified()] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the tables of the %s: %w", s.name, err)
	}
	return out, nil
}

// loadCorrelation reads how well the leading key column follows the
// physical order of the table (nil when never analysed).
func loadCorrelation(ctx context.Context, s *side, r *relation) error {
	if len(r.key) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, `SELECT correlation::float8 FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3 AND correlation IS NOT NULL`,
		r.schema, r.name, r.key[0])
	if err != nil {
		return fmt.Errorf("read statistics of %s on the %s: %w", r.qualified(), s.name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c float64
		if err := rows.Scan(&c); err != nil {
			return err
		}
		r.correlation = &c
	}
	return rows.Err()
}

// matches reports whether the relation is selected by the patterns.
func matches(patterns []string, schema, name, root string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		for _, cand := range []string{schema + "." + name, name, root, afterDot(root)} {
			if cand == "" {
				continue
			}
			if ok, _ := path.Match(p, cand); ok {
				return true
			}
		}
	}
	return false
}

func afterDot(s string) string {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// pair is a table as both sides know it, with what will be compared.
type pair struct {
	src, tgt *relation
	cols     []column // on both sides, by name
	problems []string // schema differences, each a difference
}

// pairTables matches the two catalogs. Tables on one side only are
// returned as problems of their own.
func pairTables(src, tgt map[string]*relation, patterns []string) (pairs []*pair, onlySource, onlyTarget []string) {
	for q, s := range src {
		if !matches(patterns, s.schema, s.name, s.root) {
			continue
		}
		t, ok := tgt[q]
		if !ok {
			onlySource = append(onlySource, q)
			continue
		}
		p := &pair{src: s, tgt: t}
		tcols := map[string]column{}
		for _, c := range t.cols {
			tcols[c.name] = c
		}
		scols := map[string]bool{}
		for _, c := range s.cols {
			scols[c.name] = true
			if tc, ok := tcols[c.name]; ok {
				c.sameType = tc.typOID == c.typOID
				p.cols = append(p.cols, c)
			} else {
				p.problems = append(p.problems, fmt.Sprintf("column %s is missing on the target", quoteIfNeeded(c.name)))
			}
		}
		for _, c := range t.cols {
			if !scols[c.name] {
				p.problems = append(p.problems, fmt.Sprintf("column %s exists only on the target", quoteIfNeeded(c.name)))
			}
		}
		pairs = append(pairs, p)
	}
	for q, t := range tgt {
		if _, ok := src[q]; !ok && matches(patterns, t.schema, t.name, t.root) {
			onlyTarget = append(onlyTarget, q)
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].src.qualified() < pairs[j].src.qualified() })
	sort.Strings(onlySource)
	sort.Strings(onlyTarget)
	return pairs, onlySource, onlyTarget
}

// keyColumns is the primary key usable for comparing by key: the source's,
// when the target has the same one and every key column is compared.
func (p *pair) keyColumns() []column {
	if len(p.src.key) == 0 || strings.Join(p.src.key, "\x00") != strings.Join(p.tgt.key, "\x00") {
		return nil
	}
	var out []column
	for _, k := range p.src.key {
		found := false
		for _, c := range p.cols {
			if c.name == k {
				out = append(out, c)
				found = true
			}
		}
		if !found {
			return nil
		}
	}
	return out
}

// quoteIfNeeded shows an identifier as SQL would need it.
func quoteIfNeeded(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
		}
	}
	return s
}

// sequence is one sequence's position.
type sequence struct {
	schema, rel string
	name        string // schema.name, quoted where SQL needs it (displayName)
	value       *int64 // last_value; nil when never used
	descending  bool   // increment_by < 0: "behind" means greater
}

func loadSequences(ctx context.Context, s *side) (map[string]sequence, error) {
	rows, err := s.pool.Query(ctx, `SELECT s.schemaname::text, s.sequencename::text, s.last_value, s.increment_by < 0
		FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
		WHERE `+pgcatalog.UserRelation)
	if err != nil {
		return nil, fmt.Errorf("list the sequences of the %s: %w", s.name, err)
	}
	defer rows.Close()
	out := map[string]sequence{}
	for rows.Next() {
		var q sequence
		if err := rows.Scan(&q.schema, &q.rel, &q.value, &q.descending); err != nil {
			return nil, fmt.Errorf("list the sequences of the %s: %w", s.name, err)
		}
		q.name = displayName(q.schema, q.rel)
		out[q.name] = q
	}
	return out, rows.Err()
}
