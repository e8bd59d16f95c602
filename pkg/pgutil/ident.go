package pgutil

import "github.com/jackc/pgx/v5"

// QuoteIdent quotes one identifier ("My Table" → "\"My Table\"").
func QuoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// QualifiedName quotes schema.name.
func QualifiedName(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

// EscapeLiteral doubles single quotes, for a string literal in SQL built
// by hand where a parameter cannot be used (DDL).
func EscapeLiteral(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(out)
}
