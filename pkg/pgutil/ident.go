package pgutil

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// QuoteIdent quotes one identifier ("My Table" → "\"My Table\"").
func QuoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// QualifiedName quotes schema.name.
func QualifiedName(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

// QuoteLiteral quotes s as an SQL string literal (it's → 'it”s'), for SQL
// built by hand where a parameter cannot be used: DDL, SET, and commands
// of the replication protocol.
//
// A backslash stays as it is. That is right with standard_conforming_strings
// on, the server default that pgx requires of its sessions, and in the
// replication protocol's commands, whose grammar has no escapes at all; the
// E'…' form that the server's quote_literal() writes for such a string is
// not accepted there.
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
