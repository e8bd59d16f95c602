package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// What verify compares besides tables and sequences: large objects and
// materialized views, neither of which a stream carries.

// LargeObjectsLimit is the sentence reports give about large objects.
const LargeObjectsLimit = "large objects are copied by the snapshot only: neither capture carries later changes to them, so they are compared here (count and checksum) and any written since the snapshot differ"

// LargeObjects compares the large objects of both sides.
type LargeObjects struct {
	Source     int64  `json:"source"`
	Target     int64  `json:"target"`
	SourceHash string `json:"source_md5"`
	TargetHash string `json:"target_md5"`
	Identical  bool   `json:"identical"`
	Note       string `json:"note"`
}

// MatViewResult is one materialized view's rows on both sides. A stream
// does not refresh them, and their rows depend on when each side last
// refreshed them, so one that differs is a warning (cutover refreshes the
// target's), never a difference of the data.
type MatViewResult struct {
	View       string `json:"view"`
	SourceRows int64  `json:"source_rows"`
	TargetRows int64  `json:"target_rows"`
	Identical  bool   `json:"identical"`
	Problem    string `json:"problem,omitempty"`
}

// largeObjectDigest is the count of large objects and an md5 over each
// one's oid and md5, in oid order. lo_get reads one object at a time on
// the server; only the digest comes back.
func largeObjectDigest(ctx context.Context, s *side) (int64, string, error) {
	var n int64
	var sum string
	err := s.pool.QueryRow(ctx, `SELECT count(*), coalesce(md5(string_agg(m.oid::text || ':' || md5(lo_get(m.oid)), ',' ORDER BY m.oid)), '')
		FROM pg_largeobject_metadata m`).Scan(&n, &sum)
	if err != nil {
		return 0, "", fmt.Errorf("read the large objects of the %s (their owner, or lo_compat_privileges, may read them): %w", s.name, err)
	}
	return n, sum, nil
}

func compareLargeObjects(ctx context.Context, src, tgt *side) (*LargeObjects, error) {
	var lo LargeObjects
	var err error
	if lo.Source, lo.SourceHash, err = largeObjectDigest(ctx, src); err != nil {
		return nil, err
	}
	if lo.Target, lo.TargetHash, err = largeObjectDigest(ctx, tgt); err != nil {
		return nil, err
	}
	lo.Identical = lo.Source == lo.Target && lo.SourceHash == lo.TargetHash
	lo.Note = LargeObjectsLimit
	return &lo, nil
}

type matView struct {
	schema, name string
	populated    bool
}

func loadMatViews(ctx context.Context, s *side) (map[string]matView, error) {
	rows, err := s.pool.Query(ctx, `SELECT n.nspname, c.relname, c.relispopulated FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND `+pgcatalog.UserRelation)
	if err != nil {
		return nil, fmt.Errorf("list the materialized views of the %s: %w", s.name, err)
	}
	out := map[string]matView{}
	defer rows.Close()
	for rows.Next() {
		var v matView
		if err := rows.Scan(&v.schema, &v.name, &v.populated); err != nil {
			return nil, fmt.Errorf("list the materialized views of the %s: %w", s.name, err)
		}
		out[displayName(v.schema, v.name)] = v
	}
	return out, rows.Err()
}

// matViewDigest is a row count and an md5 of the sorted row texts.
func matViewDigest(ctx context.Context, s *side, v matView) (int64, string, error) {
	if !v.populated {
		return 0, "not populated", nil
	}
	var n int64
	var sum string
	err := s.pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(r::text, E'\n' ORDER BY r::text COLLATE "C")), '') FROM %s r`,
		pgutil.QualifiedName(v.schema, v.name))).Scan(&n, &sum)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ObjectNotInPrerequisiteState {
		return 0, "not populated", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read materialized view %s on the %s: %w", displayName(v.schema, v.name), s.name, err)
	}
	return n, sum, nil
}

func compareMatViews(ctx context.Context, src, tgt *side, patterns []string) ([]MatViewResult, error) {
	sv, err := loadMatViews(ctx, src)
	if err != nil {
		return nil, err
	}
	tv, err := loadMatViews(ctx, tgt)
	if err != nil {
		return nil, err
	}
	var out []MatViewResult
	for name, v := range sv {
		if !matches(patterns, v.schema, v.name, "") {
			continue
		}
		r := MatViewResult{View: name}
		w, ok := tv[name]
		if !ok {
			r.Problem = "missing on the target"
			out = append(out, r)
			continue
		}
		var ssum, tsum string
		if r.SourceRows, ssum, err = matViewDigest(ctx, src, v); err != nil {
			return nil, err
		}
		if r.TargetRows, tsum, err = matViewDigest(ctx, tgt, w); err != nil {
			return nil, err
		}
		r.Identical = ssum == tsum && r.SourceRows == r.TargetRows
		if !r.Identical {
			r.Problem = "stale on the target: REFRESH MATERIALIZED VIEW " + name + " there (cutover does)"
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].View < out[j].View })
	return out, nil
}

// cutoverMovedSequences reports whether cutover has moved the target's
// sequences (its "sequences" step is done): from then on a sequence behind
// the source is a difference, before it only a warning, since the stream
// only keeps them close.
func cutoverMovedSequences(ctx context.Context, tgt *side) bool {
	var done bool
	err := tgt.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM replicator.cutover WHERE step = 'sequences' AND status = 'done')`).Scan(&done)
	return err == nil && done
}
