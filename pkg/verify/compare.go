package verify

import (
	"strings"
)

// Kinds of row differences.
const (
	MissingOnTarget = "missing on target"
	ExtraOnTarget   = "extra on target"
	Different       = "different"
)

// RowDiff is one differing row.
type RowDiff struct {
	Kind string `json:"kind"`
	// Key names the row of a table with a primary key: "id=7" or
	// "(a, b)=(1, x)".
	Key string `json:"key,omitempty"`
	// Columns are the differing columns of a "different" row.
	Columns []string `json:"columns,omitempty"`
	// Row is the content of a row of a table without a primary key,
	// truncated for display, and Count how many copies differ.
	Row   string `json:"row,omitempty"`
	Count int64  `json:"count,omitempty"`

	keyVals []string // the key's values as text; nil without a key
}

func (d RowDiff) identity() string {
	return d.Kind + "\x00" + d.Key + "\x00" + d.Row
}

// keyedRow is a row of a keyed table as fetched for comparison.
type keyedRow struct {
	key    []string
	hashes []*int64
}

// diffKeyed compares the rows of one leaf range or bucket, held in memory
// (at most a few LeafRows rows per side).
func diffKeyed(key, cols []column, src, tgt []keyedRow) []RowDiff {
	idx := make(map[string]int, len(src))
	for i, r := range src {
		idx[strings.Join(r.key, "\x00")] = i
	}
	seen := make([]bool, len(src))
	var out []RowDiff
	for _, t := range tgt {
		i, ok := idx[strings.Join(t.key, "\x00")]
		if !ok {
			out = append(out, RowDiff{Kind: ExtraOnTarget, Key: showKey(key, t.key), keyVals: t.key})
			continue
		}
		seen[i] = true
		var diff []string
		for c := range cols {
			if !sameHash(src[i].hashes[c], t.hashes[c]) {
				diff = append(diff, quoteIfNeeded(cols[c].name))
			}
		}
		if len(diff) > 0 {
			out = append(out, RowDiff{Kind: Different, Key: showKey(key, t.key), Columns: diff, keyVals: t.key})
		}
	}
	for i, s := range src {
		if !seen[i] {
			out = append(out, RowDiff{Kind: MissingOnTarget, Key: showKey(key, s.key), keyVals: s.key})
		}
	}
	return out
}

func sameHash(a, b *int64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func showKey(key []column, vals []string) string {
	if len(key) == 1 {
		return quoteIfNeeded(key[0].name) + "=" + vals[0]
	}
	names := make([]string, len(key))
	for i, c := range key {
		names[i] = quoteIfNeeded(c.name)
	}
	return "(" + strings.Join(names, ", ") + ")=(" + strings.Join(vals, ", ") + ")"
}

// multisetRow is a distinct row of a table without a key: its hash, how
// many copies a side holds, and its text for display.
type multisetRow struct {
	hash  int64
	count int64
	text  string
}

func diffMultiset(src, tgt []multisetRow) []RowDiff {
	counts := map[int64]*[2]int64{}
	texts := map[int64]string{}
	for _, r := range src {
		c := counts[r.hash]
		if c == nil {
			c = &[2]int64{}
			counts[r.hash] = c
		}
		c[0] += r.count
		texts[r.hash] = r.text
	}
	for _, r := range tgt {
		c := counts[r.hash]
		if c == nil {
			c = &[2]int64{}
			counts[r.hash] = c
		}
		c[1] += r.count
		texts[r.hash] = r.text
	}
	var out []RowDiff
	for h, c := range counts {
		switch {
		case c[0] > c[1]:
			out = append(out, RowDiff{Kind: MissingOnTarget, Row: texts[h], Count: c[0] - c[1]})
		case c[1] > c[0]:
			out = append(out, RowDiff{Kind: ExtraOnTarget, Row: texts[h], Count: c[1] - c[0]})
		}
	}
	return out
}
