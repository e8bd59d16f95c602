package position

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"replicator/internal/testenv"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }

func TestCompare(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b Position
		want int
	}{
		{"LSN before", LSN(0x10), LSN(0x2A), -1},
		{"LSN equal", LSN(0x2A), LSN(0x2A), 0},
		{"LSN across the 32-bit halves", LSN(0x1_0000_0000), LSN(0xFFFF_FFFF), 1},
		{"batch before", Batch(6), Batch(7), -1},
		{"batch equal", Batch(7), Batch(7), 0},
		{"changelog id after", ChangelogID(43), ChangelogID(42), 1},
		{"zero before any LSN", Position{}, LSN(0), -1},
		{"zero before any batch", Position{}, Batch(0), -1},
		{"zero equals zero", Position{}, Position{}, 0},
		// Across kinds only the kind orders: an LSN and a batch say
		// nothing about each other, the order just stays total.
		{"kinds order by kind", Batch(1), LSN(1 << 40), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.a.Compare(c.b); got != c.want {
				t.Errorf("%s.Compare(%s) = %d, want %d", c.a, c.b, got, c.want)
			}
			if got := c.b.Compare(c.a); got != -c.want {
				t.Errorf("%s.Compare(%s) = %d, want %d", c.b, c.a, got, -c.want)
			}
			if got := c.a.Less(c.b); got != (c.want < 0) {
				t.Errorf("%s.Less(%s) = %t", c.a, c.b, got)
			}
		})
	}
	ps := []Position{Batch(3), LSN(9), Position{}, Batch(1), LSN(2)}
	slices.SortFunc(ps, Position.Compare)
	if want := []Position{{}, LSN(2), LSN(9), Batch(1), Batch(3)}; !slices.Equal(ps, want) {
		t.Errorf("sorted: %v, want %v", ps, want)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		p    Position
		want string
	}{
		{LSN(0x2A), "source LSN 0/2A"},
		{LSN(0x16_B374_8000), "source LSN 16/B3748000"},
		{Batch(7), "changelog batch 7"},
		{ChangelogID(42), "changelog id 42"},
		{Position{}, "no position"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
	for _, c := range []struct {
		first, last Position
		want        string
	}{
		{LSN(0x10), LSN(0x2A), "source LSN 0/10..0/2A"},
		{LSN(0x2A), LSN(0x2A), "source LSN 0/2A"},
		{ChangelogID(3), ChangelogID(9), "changelog ids 3..9"},
		{ChangelogID(3), ChangelogID(3), "changelog id 3"},
		{Batch(4), Batch(6), "changelog batches 4..6"},
		{ChangelogID(5), Position{}, "changelog id 5"},
		{LSN(1), Batch(2), "source LSN 0/1..changelog batch 2"},
	} {
		if got := Range(c.first, c.last); got != c.want {
			t.Errorf("Range(%v, %v) = %q, want %q", c.first, c.last, got, c.want)
		}
	}
}

func TestAccessors(t *testing.T) {
	p := LSN(0x1_0000_002A)
	if p.Kind() != KindLSN || p.LSN() != pglogrepl.LSN(0x1_0000_002A) || p.ID() != 0 || p.Uint64() != 0x1_0000_002A || p.IsZero() {
		t.Errorf("LSN accessors: %v %v %v %v", p.Kind(), p.LSN(), p.ID(), p.Uint64())
	}
	b := Batch(7)
	if b.Kind() != KindBatch || b.ID() != 7 || b.LSN() != 0 || b.Uint64() != 7 {
		t.Errorf("batch accessors: %v %v %v", b.Kind(), b.ID(), b.LSN())
	}
	if q, err := ParseLSN("16/B3748000"); err != nil || q != LSN(0x16_B374_8000) {
		t.Errorf("ParseLSN: %v, %v", q, err)
	}
	for _, p := range []Position{{}, LSN(0x2A), Batch(7), ChangelogID(42)} {
		if q, err := New(p.Kind(), p.Uint64()); err != nil || q != p {
			t.Errorf("New(%v, %d) = %v, %v; want %v", p.Kind(), p.Uint64(), q, err, p)
		}
	}
	if _, err := New(Kind(99), 1); err == nil {
		t.Error("New of an unknown kind succeeded")
	}
	if _, err := ParseLSN("42"); err == nil {
		t.Error("ParseLSN of a plain number succeeded")
	}
}

// Positions stored and read back through a real server, in the column
// types replicator.state uses: pg_lsn for LSNs, bigint for batch ids.
func TestScanValueRoundTrip(t *testing.T) {
	ctx := context.Background()
	conn := pg.Connect(t, pg.NewDatabase(t))
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE p (id int PRIMARY KEY, lsn pg_lsn, batch bigint)`); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		name  string
		lsn   Position
		batch Position
	}{
		{"small", LSN(0x2A), Batch(7)},
		{"past 32 bits", LSN(0xFFFF_FFFF_0000_0001), Batch(1 << 40)},
		{"zero values", LSN(0), Batch(0)},
		{"NULL LSN", Position{}, ChangelogID(42)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := conn.Exec(ctx, `INSERT INTO p VALUES ($1, $2, $3)`, i, c.lsn, c.batch); err != nil {
				t.Fatal(err)
			}
			// The server holds the typed value, not some encoding of ours.
			var text *string
			if err := conn.QueryRow(ctx, `SELECT lsn::text FROM p WHERE id = $1`, i).Scan(&text); err != nil {
				t.Fatal(err)
			}
			if c.lsn.IsZero() != (text == nil) || (text != nil && *text != c.lsn.LSN().String()) {
				t.Errorf("pg_lsn column holds %v, want %s", text, c.lsn.LSN())
			}
			var gotLSN Position
			gotBatch := Position{kind: c.batch.Kind()}
			if err := conn.QueryRow(ctx, `SELECT lsn, batch FROM p WHERE id = $1`, i).Scan(&gotLSN, &gotBatch); err != nil {
				t.Fatal(err)
			}
			if gotLSN != c.lsn || gotBatch != c.batch {
				t.Errorf("read back %v, %v; want %v, %v", gotLSN, gotBatch, c.lsn, c.batch)
			}
			// Text results (as a cast to text or a simple-protocol
			// session gives them) scan the same.
			var textLSN Position
			textBatch := Position{kind: c.batch.Kind()}
			if err := conn.QueryRow(ctx, `SELECT lsn::text, batch::text FROM p WHERE id = $1`, i).Scan(&textLSN, &textBatch); err != nil {
				t.Fatal(err)
			}
			if textLSN != c.lsn || textBatch != c.batch {
				t.Errorf("read back from text %v, %v; want %v, %v", textLSN, textBatch, c.lsn, c.batch)
			}
		})
	}
	// A server-side comparison of stored LSNs agrees with Compare.
	var later bool
	if err := conn.QueryRow(ctx, `SELECT $1::pg_lsn > $2::pg_lsn`, LSN(0x1_0000_0000), LSN(0xFFFF_FFFF)).Scan(&later); err != nil || !later {
		t.Errorf("server compares 1/0 > 0/FFFFFFFF: %t, %v", later, err)
	}
}

func TestScanRefusesWhatItCannotName(t *testing.T) {
	var p Position
	if err := p.Scan(int64(7)); err == nil || !strings.Contains(err.Error(), "kind") {
		t.Errorf("an integer scanned into a position of no kind: %v", err)
	}
	b := Batch(0)
	if err := b.Scan("0/2A"); err == nil {
		t.Error("an LSN scanned into a batch position")
	}
	if err := b.Scan(int64(-1)); err == nil {
		t.Error("a negative batch id was accepted")
	}
	if err := b.Scan(nil); err != nil || !b.IsZero() {
		t.Errorf("NULL: %v, %v", b, err)
	}
	if _, err := (Position{kind: 99}).Value(); err == nil {
		t.Error("an unknown kind was stored")
	}
}
