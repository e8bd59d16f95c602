package pgutil

import (
	"context"
	"strings"
	"testing"
)

var literals = []struct{ in, want string }{
	{"", "''"},
	{"plain", "'plain'"},
	{"it's", "'it''s'"},
	{"''", "''''''"},
	{`back\slash`, `'back\slash'`},
	{`\'`, `'\'''`},
	{`ends in \`, `'ends in \'`},
	{`\\n`, `'\\n'`},
	{"two\nlines\ttab", "'two\nlines\ttab'"},
	{"é ☃ 🐘", "'é ☃ 🐘'"},
	{"$$ dollar $$", "'$$ dollar $$'"},
	{"x'; DROP TABLE t; --", "'x''; DROP TABLE t; --'"},
	{"E'x'", "'E''x'''"},
}

func TestQuoteLiteral(t *testing.T) {
	for _, c := range literals {
		if got := QuoteLiteral(c.in); got != c.want {
			t.Errorf("QuoteLiteral(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// The server reads each literal back as the string it quotes, with
// standard_conforming_strings on; where the string holds no backslash the
// literal is exactly what the server's quote_literal() writes (with one,
// the server writes the E'…' form, which means the same there).
func TestQuoteLiteralOnServer(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	if _, err := conn.Exec(ctx, "SET standard_conforming_strings = on"); err != nil {
		t.Fatal(err)
	}
	for _, c := range literals {
		lit := QuoteLiteral(c.in)
		var back, server string
		if err := conn.QueryRow(ctx, "SELECT "+lit+"::text, quote_literal($1::text)", c.in).Scan(&back, &server); err != nil {
			t.Errorf("SELECT %s: %v", lit, err)
			continue
		}
		if back != c.in {
			t.Errorf("the server reads %s as %q, want %q", lit, back, c.in)
		}
		if !strings.Contains(c.in, `\`) && server != lit {
			t.Errorf("QuoteLiteral(%q) = %s, the server's quote_literal gives %s", c.in, lit, server)
		}
	}
}
