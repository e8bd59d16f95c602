package trigger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Describing the tables of changes.
//
// The capture function records every row by column name as the row is at
// the time of the write, whatever columns the table has then (see
// rowFunctionDDL); the install catalog's column lists are only a record of
// the install. So the reader describes a table from the change itself and
// the source's catalog: a change that names exactly (INSERT: the whole
// row) or only (UPDATE, DELETE) columns of the table's current
// description is read under it; any other change has the table described
// again from the source's catalog, and if the change still does not fit
// (its columns were changed again since the write), under a description
// built from the change's own columns: the catalog's columns it names, in
// the catalog's order, then the ones the catalog no longer has. Each new
// description is a new *Table, which Source turns into a new wal.Relation,
// as logical capture sends a new Relation message after ALTER TABLE. A
// column added on the source thus appears, by name, from its first write
// on; a dropped one disappears from the first INSERT without it; a renamed
// one appears under its new name.

// describe reads table id's current description from the source's
// catalog: its name, key and columns (generated columns, which the target
// computes, in t.generated). A table dropped since its changes were
// recorded is described by the install catalog.
func describe(ctx context.Context, q queryer, id uint32) (*Table, error) {
	t := &Table{ID: id}
	var identity string
	err := q.QueryRow(ctx, `SELECT coalesce(pg_partition_root(c.oid)::oid, c.oid), n.nspname, c.relname,
			CASE WHEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) THEN 'd'
			     WHEN c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) THEN 'i'
			     ELSE 'f' END
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, id).Scan(&t.Root, &t.Namespace, &t.Name, &identity)
	if errors.Is(err, pgx.ErrNoRows) {
		return installed(ctx, q, id)
	}
	if err != nil {
		return nil, fmt.Errorf("describe table oid %d from the source's catalog: %w", id, err)
	}
	t.Identity = identity[0]
	rows, err := q.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '',
			CASE $2 WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY (i.indkey))
			        WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisreplident AND a.attnum = ANY (i.indkey))
			        ELSE true END
		FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, id, identity)
	if err != nil {
		return nil, fmt.Errorf("describe %s from the source's catalog: %w", t, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c Column
		var generated bool
		if err := rows.Scan(&c.Name, &c.Type, &generated, &c.Key); err != nil {
			return nil, fmt.Errorf("describe %s from the source's catalog: %w", t, err)
		}
		if generated {
			if t.generated == nil {
				t.generated = map[string]bool{}
			}
			t.generated[c.Name] = true
			continue
		}
		t.Columns = append(t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("describe %s from the source's catalog: %w", t, err)
	}
	t.index()
	return t, nil
}

// installed describes table id as the install catalog recorded it.
func installed(ctx context.Context, q queryer, id uint32) (*Table, error) {
	t := &Table{ID: id}
	var identity string
	var cols, keys []string
	err := q.QueryRow(ctx, `SELECT root, nspname, relname, identity::text, columns, key_columns FROM replicator.tables WHERE relid = $1`, id).
		Scan(&t.Root, &t.Namespace, &t.Name, &identity, &cols, &keys)
	if err != nil {
		return nil, fmt.Errorf("changelog names table oid %d, which neither the source's catalog nor the install catalog (replicator.tables) holds: %w", id, err)
	}
	t.Identity = identity[0]
	isKey := map[string]bool{}
	for _, k := range keys {
		isKey[k] = true
	}
	for _, col := range cols {
		t.Columns = append(t.Columns, Column{Name: col, Key: isKey[col] || t.Identity == 'f'})
	}
	t.index()
	return t, nil
}

// hasKey tells whether the recorded key ps holds every key column of t.
func (t *Table) hasKey(ps []pair) bool {
	n := 0
	for _, p := range ps {
		if i, ok := t.colIndex[p.name]; ok && t.Columns[i].Key {
			n++
		}
	}
	for _, col := range t.Columns {
		if col.Key {
			n--
		}
	}
	return n == 0
}

// fits tells whether a change naming the columns of ps (key and values)
// can be read under t: every name is a column of t (or a generated one),
// and when whole (an INSERT's row) every column of t is named.
func (t *Table) fits(whole bool, ps ...[]pair) bool {
	n := 0
	for _, p := range ps {
		for _, x := range p {
			if _, ok := t.colIndex[x.name]; ok {
				n++
			} else if !t.generated[x.name] {
				return false
			}
		}
	}
	return !whole || n == len(t.Columns)
}

// reshape returns a description of cur's table that the change of ps
// fits: cur itself, else the table described again from the catalog,
// else one built from the catalog's and the change's columns (see the
// comment at the top of this file).
func (c *Capture) reshape(ctx context.Context, q queryer, cur *Table, whole bool, ps ...[]pair) (*Table, error) {
	return c.reshapeIf(ctx, q, cur, cur.fits(whole, ps...), whole, ps...)
}

func (c *Capture) reshapeIf(ctx context.Context, q queryer, cur *Table, fits, whole bool, ps ...[]pair) (*Table, error) {
	if fits {
		return cur, nil
	}
	t, err := describe(ctx, q, cur.ID)
	if err != nil {
		return nil, err
	}
	if !t.fits(whole, ps...) {
		t = derive(ctx, q, t, whole, ps...)
	}
	c.mu.Lock()
	c.tables[t.ID] = t
	c.mu.Unlock()
	return t, nil
}

// derive builds a description of t's table for a change of ps that t, the
// table's current description, does not fit: the change's columns were
// changed since it was written (renamed, dropped). Its columns are the
// change's (all of t's too unless whole), ordered and keyed as the install
// catalog had them where it knows them, else as t has them, else in the
// change's order (a key only when every column is).
func derive(ctx context.Context, q queryer, t *Table, whole bool, ps ...[]pair) *Table {
	named := map[string]bool{}
	for _, p := range ps {
		for _, x := range p {
			if !t.generated[x.name] {
				named[x.name] = true
			}
		}
	}
	if !whole {
		for _, col := range t.Columns {
			named[col.Name] = true
		}
	}
	d := &Table{ID: t.ID, Root: t.Root, Namespace: t.Namespace, Name: t.Name, Identity: t.Identity, generated: t.generated}
	add := func(col Column) {
		if named[col.Name] {
			d.Columns = append(d.Columns, col)
			named[col.Name] = false
		}
	}
	if inst, err := installed(ctx, q, t.ID); err == nil {
		for _, col := range inst.Columns {
			if i, ok := t.colIndex[col.Name]; ok {
				col = t.Columns[i]
			}
			add(col)
		}
	}
	for _, col := range t.Columns {
		add(col)
	}
	for _, p := range ps {
		for _, x := range p {
			add(Column{Name: x.name, Key: t.Identity == 'f'})
		}
	}
	d.index()
	return d
}
