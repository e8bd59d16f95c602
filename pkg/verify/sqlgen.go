package verify

import (
	"fmt"
	"strings"

	"replicator/pkg/pgutil"
)

// The SQL of a comparison is built from the catalog: identifiers are always
// quoted, values always bound as parameters.

// hashOf is the 64-bit hash of a text. hashtextextended is the hash
// Postgres itself uses for hash partitioning: stable across releases since
// 11, and the same on every little-endian platform (x86-64 and arm64, so
// Heroku and RDS alike).
func hashOf(text string) string { return "hashtextextended(" + text + ", 0)" }

// rowText is a row's text over the compared columns in name order. ROW()
// output quotes empty strings and leaves NULL empty, so NULL and the empty
// string differ. It names rows without a key in reports.
func rowText(cols []column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = pgutil.QuoteIdent(c.name)
	}
	return "ROW(" + strings.Join(parts, ", ") + ")::text"
}

// rowHash is the 64-bit hash of a row over the given columns (in name
// order): the xor of one hash per column, each seeded with the column's
// position so that swapped values change the hash, and a NULL standing for
// a constant of its own so that NULL, zero and the empty string differ.
// Chunks are summarised by the SUM of their rows' hashes, not an xor, so
// duplicate rows do not cancel out.
//
// A column is hashed by its type's own hash function (the one hash
// partitioning uses, stable across releases and platforms) when that hash
// tells apart every two values whose text differs; otherwise, and when the
// two sides declare different types, by the hash of its text under the
// pinned session settings. Hashing the value skips the type's output
// function, which is most of the cost of a text hash.
func rowHash(cols []column) string {
	if len(cols) == 0 {
		return "0::int8"
	}
	parts := make([]string, len(cols))
	for i, c := range cols {
		seed := i + 1
		parts[i] = fmt.Sprintf("coalesce(%s, %d)", valueHash(c, seed), nullHash(seed))
	}
	return "(" + strings.Join(parts, " # ") + ")"
}

// valueHash is the SQL of one column's seeded hash; NULL for NULL.
func valueHash(c column, seed int) string {
	col := pgutil.QuoteIdent(c.name)
	if c.sameType {
		switch c.typOID {
		case 16: // boolean
			return fmt.Sprintf("hashint4extended(%s::int4, %d)", col, seed)
		case 20:
			return fmt.Sprintf("hashint8extended(%s, %d)", col, seed)
		case 21:
			return fmt.Sprintf("hashint2extended(%s, %d)", col, seed)
		case 23:
			return fmt.Sprintf("hashint4extended(%s, %d)", col, seed)
		case 26:
			return fmt.Sprintf("hashoidextended(%s, %d)", col, seed)
		case 25, 1043: // text, varchar: bytes, whatever the column's collation
			return fmt.Sprintf(`hashtextextended(%s COLLATE "C", %d)`, col, seed)
		case 1042: // char(n): values are stored padded, and padding is not significant
			return fmt.Sprintf(`hashbpcharextended(%s COLLATE "C", %d)`, col, seed)
		case 1700: // numeric: its hash ignores the display scale (1.0 = 1.00), so add it
			return fmt.Sprintf("(hash_numeric_extended(%s, %d) # coalesce(hashint4extended(scale(%s), %d), 0))", col, seed, col, seed)
		case 2950:
			return fmt.Sprintf("uuid_hash_extended(%s, %d)", col, seed)
		case 1114:
			return fmt.Sprintf("timestamp_hash_extended(%s, %d)", col, seed)
		case 1184: // timestamptz: exact as timestamp under the pinned TimeZone UTC
			return fmt.Sprintf("timestamp_hash_extended(%s::timestamp, %d)", col, seed)
		case 1083:
			return fmt.Sprintf("time_hash_extended(%s, %d)", col, seed)
		}
	}
	// Floats (-0 hashes as 0), interval ('1 day' as '24 hours'), jsonb
	// (1.0 as 1.00), citext and the rest: by their text.
	return fmt.Sprintf(`hashtextextended(%s::text COLLATE "C", %d)`, col, seed)
}

// nullHash is the constant a NULL in column seed contributes: a
// splitmix64 of the seed, so each column's NULL is its own.
func nullHash(seed int) int64 {
	z := uint64(seed)*0x9e3779b97f4a7c15 + 0x6a09e667f3bcc909
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return int64(z ^ (z >> 31))
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
		parts[i] = hashOf(pgutil.QuoteIdent(c.name) + `::text COLLATE "C"`)
	}
	return "ARRAY[" + strings.Join(parts, ", ") + "]"
}
