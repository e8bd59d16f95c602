package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/schemachange"
)

// Besides the tables, the schema comparison covers what the stream
// follows of the captured schemas (pkg/schemachange): enums (their labels
// in order), domains, composite and range types, sequences (their
// options; their values are compared with the data), functions and
// procedures, views and materialized views (their definitions; a
// materialized view's rows are compared apart). They are paired by kind
// and name, and each difference carries the SQL that makes the target's
// like the source's, as the stream would have run it. They are compared
// only when no --tables narrows the comparison: a function or a type
// belongs to no table. Definitions are PostgreSQL's own rendering
// (pg_get_viewdef, pg_get_functiondef), which a target of a later major
// version may word otherwise: such a difference is reported, and its fix
// is harmless to run.

// compareObjects returns the differences of the objects other than
// tables, and how many the source has.
func compareObjects(ctx context.Context, src, tgt *side) ([]SchemaDiff, int, error) {
	var diffs []schemachange.ObjectDifference
	var n int
	ro := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, src.pool, ro, func(stx pgx.Tx) error {
		if _, err := stx.Exec(ctx, `SET LOCAL search_path = pg_catalog`); err != nil {
			return fmt.Errorf("source: %w", err)
		}
		return pgx.BeginTxFunc(ctx, tgt.pool, ro, func(ttx pgx.Tx) error {
			if _, err := ttx.Exec(ctx, `SET LOCAL search_path = pg_catalog`); err != nil {
				return fmt.Errorf("target: %w", err)
			}
			var err error
			diffs, n, err = schemachange.DiffObjects(ctx, stx, ttx)
			return err
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("compare the types, sequences, functions and views: %w", err)
	}
	out := make([]SchemaDiff, 0, len(diffs))
	for _, d := range diffs {
		kind := SchemaDefinition
		switch d.Change {
		case schemachange.CreateObject:
			kind = SchemaMissing
		case schemachange.DropObject:
			kind = SchemaExtra
		}
		fix := d.SQL
		switch {
		case fix == "":
			fix = d.Fix
		case d.Change == schemachange.DropObject:
			fix = "if the source dropped it: " + fix
		case kind == SchemaDefinition && d.Kind == schemachange.ObjView:
			fix += " (if PostgreSQL refuses to change the view's columns so, run DROP VIEW " + d.Name + " first)"
		}
		word := string(d.Kind)
		if d.Kind == schemachange.ObjEnum {
			word = "enum"
		}
		out = append(out, SchemaDiff{Table: d.Name, Object: word, Kind: kind,
			Source: orNone(oneLine(d.Source)), Target: orNone(oneLine(d.Target)), Fix: fix})
	}
	return out, n, nil
}

// oneLine is a definition as a report line shows it: its whitespace
// runs made one space, and cut after 200 characters (the fix has it
// whole).
func oneLine(def string) string {
	s := strings.Join(strings.Fields(def), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + " …"
	}
	return s
}
