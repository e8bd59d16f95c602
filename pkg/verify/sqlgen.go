package verify

import (
	"fmt"
	"strings"

	"replicator/pkg/pgutil"
)

// The SQL of a comparison is built from the catalog: identifiers are always
// quoted, values always bound as parameters.

// hashOf is the 64-bit hash of a text. hashtextextended is the hash
// Postgres itself uses for hash partitioning: as fast as hashtext, stable
// across releases since 11, and the same on every little-endian platform
// (x86-64 and arm64, so Heroku and RDS alike). Summed (not xor-ed) over a
// chunk, duplicates add up instead of cancelling.
func hashOf(text string) string { return "hashtextextended(" + text + ", 0)" }

// rowText is a row's text over the compared columns in name order. ROW()
// output quotes empty strings and leaves NULL empty, so NULL and the empty string differ.
func rowText(cols []column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = pgutil.QuoteIdent(c.name)
	}
	return "ROW(" + strings.Join(parts, ", ") + ")::text"
}

// keyExprs are the key columns as ordered for ranges: text keys in byte
// order (COLLATE "C"), because the two servers' C libraries may sort text
// differently, and the same range must hold the same rows on both sides.
func keyExprs(key []column) []string {
	out := make([]string, len(key))
	for i, c := range key {
		out[i] = pgutil.QuoteIdent(c.name)
		if c.collatable && !c.cCollated {
			out[i] += ` COLLATE "C"`
		}
	}
	return out
}

func keyTuple(key []column) string {
	e := keyExprs(key)
	if len(e) == 1 {
		return e[0]
	}
	return "(" + strings.Join(e, ", ") + ")"
}

// keyTexts selects the key columns as text, to show them and to bind them
// back as range bounds.
func keyTexts(key []column) string {
	parts := make([]string, len(key))
	for i, c := range key {
		parts[i] = pgutil.QuoteIdent(c.name) + "::text"
	}
	return strings.Join(parts, ", ")
}

// paramTuple binds a key given as texts, cast back to the key's types.
func paramTuple(key []column, args *[]any, vals []string) string {
	parts := make([]string, len(key))
	for i, c := range key {
		*args = append(*args, vals[i])
		parts[i] = fmt.Sprintf("$%d::%s", len(*args), c.typ)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// keyRange is a primary-key range: lo <= key < hi; nil means unbounded.
// Half-open like width_bucket, which assigns rows to ranges in one scan.
type keyRange struct {
	lo, hi []string
}

func (r keyRange) where(key []column, args *[]any) string {
	var conds []string
	if r.lo != nil {
		conds = append(conds, keyTuple(key)+" >= "+paramTuple(key, args, r.lo))
	}
	if r.hi != nil {
		conds = append(conds, keyTuple(key)+" < "+paramTuple(key, args, r.hi))
	}
	if len(conds) == 0 {
		return "true"
	}
	return strings.Join(conds, " AND ")
}

// columnHashes selects, per compared column, the hash of its text (NULL
// for NULL), so rows can be compared column by column without fetching
// large values.
func columnHashes(cols []column) string {
	if len(cols) == 0 {
		return "ARRAY[]::int8[]"
	}
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = hashOf(pgutil.QuoteIdent(c.name) + "::text")
	}
	return "ARRAY[" + strings.Join(parts, ", ") + "]"
}
