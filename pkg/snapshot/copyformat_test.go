package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// observedLogger is a logger whose Info lines the test can read.
func observedLogger(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(core), logs
}

// binaryStream builds a binary COPY stream by hand: header (with an
// extension of ext bytes), then one tuple per entry of tuples, each field
// a value or nil for NULL, then the trailer.
func binaryStream(ext int, tuples ...[][]byte) []byte {
	b := append([]byte(nil), binarySignature...)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(ext))
	b = append(b, make([]byte, ext)...)
	for _, tup := range tuples {
		b = binary.BigEndian.AppendUint16(b, uint16(len(tup)))
		for _, f := range tup {
			if f == nil {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
			b = append(b, f...)
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xffff)
}

func TestBinaryRowsCountsTuplesSplitAnywhere(t *testing.T) {
	// A value that looks like a trailer or a field count must be passed
	// over as data.
	tricky := []byte{0xff, 0xff, 0, 2, 0xff, 0xff, 0xff, 0xff}
	cases := []struct {
		name   string
		stream []byte
		rows   int64
	}{
		{"empty", binaryStream(0), 0},
		{"one row", binaryStream(0, [][]byte{[]byte("abc"), nil, {}}), 1},
		{"header extension", binaryStream(7, [][]byte{{1}}, [][]byte{{2}}), 2},
		{"zero-column tuples", binaryStream(0, [][]byte{}, [][]byte{}, [][]byte{}), 3},
		{"values like markers", binaryStream(0, [][]byte{tricky, tricky}, [][]byte{nil, tricky}, [][]byte{{0xff, 0xff}}), 3},
		{"large value", binaryStream(0, [][]byte{make([]byte, 100_000)}, [][]byte{nil}), 2},
	}
	for _, tc := range cases {
		// Whole, then split at every offset into two pieces, then fed a
		// byte at a time.
		feeds := [][][]byte{{tc.stream}}
		for i := 1; i < len(tc.stream) && i < 200; i++ {
			feeds = append(feeds, [][]byte{tc.stream[:i], tc.stream[i:]})
		}
		var bytewise [][]byte
		for i := range tc.stream {
			bytewise = append(bytewise, tc.stream[i:i+1])
		}
		feeds = append(feeds, bytewise)
		for _, pieces := range feeds {
			var b binaryRows
			var rows int64
			for _, p := range pieces {
				n, err := b.feed(p)
				if err != nil {
					t.Fatalf("%s, %d pieces: %v", tc.name, len(pieces), err)
				}
				rows += n
			}
			if rows != tc.rows || !b.done() {
				t.Fatalf("%s, %d pieces: %d rows, done %v; want %d rows, done", tc.name, len(pieces), rows, b.done(), tc.rows)
			}
		}
	}
}

func TestBinaryRowsRefusesMalformedStreams(t *testing.T) {
	good := binaryStream(0, [][]byte{{1}})
	negField := binaryStream(0, [][]byte{{1}})
	binary.BigEndian.PutUint32(negField[21:], 0xfffffffe) // length -2
	for name, s := range map[string][]byte{
		"no signature":        append([]byte("COPY\n"), good[5:]...),
		"after the trailer":   append(append([]byte(nil), good...), 0),
		"negative field size": negField,
	} {
		var b binaryRows
		if _, err := b.feed(s); !errors.Is(err, errBinaryStream) {
			t.Errorf("%s: err = %v, want errBinaryStream", name, err)
		}
	}
}

func FuzzBinaryRows(f *testing.F) {
	f.Add(binaryStream(0, [][]byte{[]byte("abc"), nil}), 5)
	f.Add(binaryStream(3, [][]byte{}, [][]byte{{0xff, 0xff}}), 1)
	f.Fuzz(func(t *testing.T, s []byte, split int) {
		var whole binaryRows
		wantRows, wantErr := whole.feed(s)
		if split < 0 || split > len(s) {
			return
		}
		var parts binaryRows
		r1, err1 := parts.feed(s[:split])
		var r2 int64
		var err2 error
		if err1 == nil {
			r2, err2 = parts.feed(s[split:])
		}
		gotErr := err1 != nil || err2 != nil
		if gotErr != (wantErr != nil) || (wantErr == nil && r1+r2 != wantRows) || (wantErr == nil && parts.done() != whole.done()) {
			t.Fatalf("split at %d: rows %d+%d err %v/%v; whole: %d rows err %v", split, r1, r2, err1, err2, wantRows, wantErr)
		}
	})
}

// binaryTypesSchema is a table of every kind of built-in value binary
// COPY carries, with NULLs, and tables that must go as text: user-defined
// enum, composite, array of enum, domain.
const binaryTypesSchema = `
	CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
	CREATE TYPE pair AS (a int, b text);
	CREATE DOMAIN posint AS int CHECK (VALUE > 0);
	CREATE TABLE builtin (
		id bigint PRIMARY KEY, i2 smallint, i4 int, f4 real, f8 double precision,
		n numeric, n2 numeric(10,3), money money, t text, vc varchar(20), c char(5), "name" name,
		b bytea, ok boolean, d date, ts timestamp, tstz timestamptz, iv interval, tm time, tmtz timetz,
		u uuid, j json, jb jsonb, x xml, ip inet, net cidr, mac macaddr, bits bit(4), vb varbit,
		pt point, bx box, r int4range, tr tstzrange, mr int8multirange, tsv tsvector, lsn pg_lsn, o oid,
		ai int[], at text[], an numeric[], ab bytea[], ats timestamptz[], a2 int[][]);
	INSERT INTO builtin SELECT g, g % 32767, -g, g / 3.0, g / 7.0,
		g * 1234567.891011, g / 8.0, g, 'line ' || g || E'\n\ttab\\back "q"', 'v' || g, 'c' || (g % 10), 'n' || g,
		decode(lpad(to_hex(g), 8, '0') || '00ff5c0a', 'hex'), g % 2 = 0, date '2020-02-29' + g, timestamp '2001-01-01 12:00:00.123456' + g * interval '1 hour',
		timestamptz '2001-01-01 12:00:00.5+02' + g * interval '1 minute', make_interval(0, g, 0, g, 0, 0, g / 10.0), time '10:00' + g * interval '1 s', timetz '10:00+03',
		md5(g::text)::uuid, json_build_object('k', g, 's', 'é€'), jsonb_build_object('k', g, 'a', jsonb_build_array(1, 'x', null)),
		xmlelement(name e, g), ('10.0.0.' || (g % 250))::inet, '10.1.0.0/16', '08:00:2b:01:02:03', B'1010', B'10101',
		point(g, -g), box(point(0, 0), point(g, g)), int4range(g, g + 10), tstzrange(now() - interval '1 day', null),
		int8multirange(int8range(1, g + 2), int8range(g + 5, g + 9)), to_tsvector('simple', 'a quick fox ' || g), '16/B374D848', g,
		ARRAY[g, NULL, -g], ARRAY['a', NULL, 'é,"}{' || g], ARRAY[g / 3.0, 'NaN'], ARRAY['\x00ff'::bytea, NULL], ARRAY[timestamptz '2020-01-01 00:00+00' + g * interval '1 s'],
		ARRAY[[g, g + 1], [g + 2, NULL]]
	FROM generate_series(1, 300) g;
	INSERT INTO builtin (id) VALUES (1000);
	INSERT INTO builtin (id, n, f8, t, b) VALUES (1001, 'NaN', '-Infinity', '', '\x');
	CREATE TABLE user_types (id int PRIMARY KEY, m mood, p pair, ms mood[], pi posint);
	INSERT INTO user_types SELECT g, (ARRAY['sad', 'ok', 'happy']::mood[])[g % 3 + 1], ROW(g, 'p' || g)::pair, ARRAY['ok', 'happy']::mood[], g
	FROM generate_series(1, 200) g;
	INSERT INTO user_types (id) VALUES (1000);
	CREATE TABLE composite_only (id int PRIMARY KEY, p pair);
	INSERT INTO composite_only SELECT g, ROW(g, NULL)::pair FROM generate_series(1, 50) g;
	CREATE TABLE enum_array_only (id int PRIMARY KEY, ms mood[]);
	INSERT INTO enum_array_only SELECT g, ARRAY['sad', NULL]::mood[] FROM generate_series(1, 50) g;
	CREATE TABLE domain_only (id int PRIMARY KEY, pi posint);
	INSERT INTO domain_only SELECT g, g FROM generate_series(1, 50) g;
	CREATE TABLE regs (id int PRIMARY KEY, rc regclass, rt regtype);
	INSERT INTO regs VALUES (1, 'builtin', 'mood'), (2, 'pg_class', 'int4');`

// Binary-copied tables are identical to the source, by an independent
// checksum of every row's text, in both copy paths; tables with a
// user-defined or OID-alias type went as text and are identical too.
func TestBinaryCopyIsIdentical(t *testing.T) {
	for _, oneSnapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("one-snapshot=%v", oneSnapshot), func(t *testing.T) {
			src, dst, cfg := pair(t)
			cfg.OneSnapshot = oneSnapshot
			cfg.ChunkBytes = 16 << 10 // several chunks of builtin in the chunked copy
			pg.Exec(t, src, binaryTypesSchema)
			want := tableSums(t, src)
			log, logs := observedLogger(t)
			if _, err := Run(context.Background(), cfg, log); err != nil {
				t.Fatal(err)
			}
			compareSums(t, want, tableSums(t, dst))
			// regs in particular: a regclass read back as text names the
			// same table on the target, not whatever has its OID there.
			if got := queryString(t, dst, `SELECT string_agg(rc::text || '/' || rt::text, ',' ORDER BY id) FROM regs`); got != "builtin/mood,pg_class/integer" {
				t.Errorf("regs on the target: %s", got)
			}
			line := logs.FilterMessageSnippet("binary COPY format").All()
			if len(line) != 1 {
				t.Fatalf("want one line saying which tables went in binary, got %d", len(line))
			}
			fields := line[0].ContextMap()
			if fields["binary_tables"] != int64(1) || fields["text_tables"] != int64(5) {
				t.Errorf("binary %v, text %v tables; want 1 (builtin) and 5", fields["binary_tables"], fields["text_tables"])
			}
			text := fmt.Sprint(fields["text"])
			mustContain(t, text, `"public"."user_types": column m is of type mood`, `"public"."composite_only": column p is of type pair`,
				`"public"."enum_array_only": column ms is of type mood[]`, `"public"."domain_only": column pi is of type posint`,
				`"public"."regs": column rc is of type regclass`)
			if strings.Contains(text, "builtin") {
				t.Errorf("builtin went as text: %s", text)
			}
		})
	}
}

// With --copy-format text nothing goes in binary, and the copy is the
// same.
func TestTextCopyFormatCopiesAllAsText(t *testing.T) {
	src, dst, cfg := pair(t)
	cfg.CopyFormat = CopyFormatText
	pg.Exec(t, src, binaryTypesSchema)
	want := tableSums(t, src)
	log, logs := observedLogger(t)
	if _, err := Run(context.Background(), cfg, log); err != nil {
		t.Fatal(err)
	}
	compareSums(t, want, tableSums(t, dst))
	if n := logs.FilterMessageSnippet("binary COPY format").Len(); n != 0 {
		t.Errorf("%d lines about binary COPY with --copy-format text", n)
	}
}

// A row the target refuses in binary format (here a character its
// encoding cannot hold) fails the copy with an error naming the table
// and the value's column.
func TestBinaryCopyRefusedRowNamesTheTable(t *testing.T) {
	src, _, cfg := pair(t)
	dst := src + "_latin1"
	pg.Exec(t, "postgres", fmt.Sprintf(`CREATE DATABASE %s TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'`, dst))
	t.Cleanup(func() { pg.Exec(t, "postgres", fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, dst)) })
	cfg.TargetURL = pg.URL(dst)
	pg.Exec(t, src, `CREATE TABLE prices (id int PRIMARY KEY, label text);
		INSERT INTO prices SELECT g, 'price ' || g FROM generate_series(1, 100) g;
		INSERT INTO prices VALUES (101, '5 €')`)
	_, err := Run(context.Background(), cfg, testLogger(t))
	if err == nil {
		t.Fatal("a row the target's encoding cannot hold was copied")
	}
	mustContain(t, err.Error(), `"public"."prices"`, "column label", "LATIN1")
}
