package snapshot

// Binary COPY. The target spends about a third of its CPU parsing COPY
// text (splitting fields, then each type's input function); in binary
// format it reads each value's length and calls the type's receive
// function instead, and the source calls send functions rather than
// output functions. But a binary value is only understood by a server
// that gives its type the same meaning: arrays and composites carry
// their element and column type OIDs, which differ between two servers
// for any type not built in, and reg* values are OIDs themselves. So a
// table is copied in binary only when every copied column's type (and,
// for an array, its element type) is built in and has the same OID and
// type modifier on both sides, and both servers are of the same major
// version; any other table is copied as text, as before.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"
)

// Copy formats accepted by Config.CopyFormat.
const (
	CopyFormatAuto = "auto" // binary for each table whose types allow it, else text
	CopyFormatText = "text" // text for every table
)

// columnTypesSQL lists, for each table named in $1 (qualified, quoted),
// its columns' type OID and modifier and whether the type's binary form
// is safe to carry between servers: built in (below FirstNormalObjectId,
// 16384, in pg_catalog), a base, range or multirange type with send and
// receive functions, not an OID alias (reg*: its binary form is the OID
// of an object, which differs between servers) nor one of the internal
// types whose receive function refuses every value; and for an array,
// its element type the same.
var columnTypesSQL = `
	WITH names(name) AS (SELECT unnest($1::text[]))
	SELECT q.name, a.attname, a.atttypid::int8, a.atttypmod,
		(` + safeType("ty") + `) AND (ty.typcategory <> 'A' OR coalesce(` + safeType("el") + `, false)),
		format_type(a.atttypid, a.atttypmod)
	FROM names q
	JOIN pg_attribute a ON a.attrelid = to_regclass(q.name) AND a.attnum > 0 AND NOT a.attisdropped
	JOIN pg_type ty ON ty.oid = a.atttypid
	LEFT JOIN pg_type el ON el.oid = ty.typelem AND ty.typcategory = 'A'`

func safeType(t string) string {
	return strings.NewReplacer("T.", t+".").Replace(`T.oid < 16384 AND T.typnamespace = 'pg_catalog'::regnamespace
		AND T.typtype IN ('b', 'r', 'm') AND T.typsend::oid <> 0 AND T.typreceive::oid <> 0
		AND T.typname !~ '^(reg|pg_node_tree$|pg_ndistinct$|pg_dependencies$|pg_mcv_list$|pg_brin_)'`)
}

// columnType is one column's type as columnTypesSQL reads it.
type columnType struct {
	oid    int64
	typmod int32
	safe   bool
	name   string // format_type, for the log
}

func readColumnTypes(ctx context.Context, db querier, names []string) (map[string]map[string]columnType, error) {
	rows, err := db.Query(ctx, columnTypesSQL, names)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]map[string]columnType{}
	for rows.Next() {
		var table, col string
		var ct columnType
		if err := rows.Scan(&table, &col, &ct.oid, &ct.typmod, &ct.safe, &ct.name); err != nil {
			return nil, err
		}
		if out[table] == nil {
			out[table] = map[string]columnType{}
		}
		out[table][col] = ct
	}
	return out, rows.Err()
}

// chooseFormats sets Binary on each table whose columns allow binary COPY
// between src and dst (the comment at the top of this file); with format
// CopyFormatText on none. The target's tables must exist. It logs how
// many tables go in each format, and why each text one does.
func chooseFormats(ctx context.Context, src, dst querier, tables []*table, format string, log *zap.Logger) error {
	for _, t := range tables {
		t.Binary = false
	}
	if format == CopyFormatText || len(tables) == 0 {
		return nil
	}
	var srcMajor, dstMajor int
	if err := src.QueryRow(ctx, `SELECT current_setting('server_version_num')::int / 10000`).Scan(&srcMajor); err != nil {
		return fmt.Errorf("read the source's version: %w", err)
	}
	if err := dst.QueryRow(ctx, `SELECT current_setting('server_version_num')::int / 10000`).Scan(&dstMajor); err != nil {
		return fmt.Errorf("read the target's version: %w", err)
	}
	if srcMajor != dstMajor {
		// Built-in types' binary forms have been stable for many
		// releases, but PostgreSQL does not promise it across versions.
		log.Info("copying every table as COPY text: source and target run different major versions, and binary COPY is only known to be the same within one",
			zap.Int("source_major", srcMajor), zap.Int("target_major", dstMajor))
		return nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.qualified()
	}
	srcTypes, err := readColumnTypes(ctx, src, names)
	if err != nil {
		return fmt.Errorf("read the column types of the source tables: %w", err)
	}
	dstTypes, err := readColumnTypes(ctx, dst, names)
	if err != nil {
		return fmt.Errorf("read the column types of the target tables: %w", err)
	}
	var binaryTables int
	why := map[string]string{}
	for _, t := range tables {
		reason := binaryRefusal(t, srcTypes[t.qualified()], dstTypes[t.qualified()])
		if reason == "" {
			t.Binary = true
			binaryTables++
		} else {
			why[t.qualified()] = reason
		}
	}
	if len(why) == 0 {
		log.Info("copying every table in binary COPY format", zap.Int("tables", binaryTables))
		return nil
	}
	textTables := make([]string, 0, len(why))
	for name := range why {
		textTables = append(textTables, name)
	}
	sort.Strings(textTables)
	for i, name := range textTables {
		textTables[i] = name + ": " + why[name]
	}
	if len(textTables) > 20 {
		textTables = append(textTables[:20], fmt.Sprintf("and %d more", len(textTables)-20))
	}
	log.Info("copying tables in binary COPY format where every column's type is built in and the same on both sides; the others as COPY text",
		zap.Int("binary_tables", binaryTables), zap.Int("text_tables", len(why)), zap.Strings("text", textTables))
	return nil
}

// binaryRefusal says why t cannot be copied in binary, "" when it can.
func binaryRefusal(t *table, src, dst map[string]columnType) string {
	if len(t.Columns) == 0 {
		return "no columns"
	}
	for _, c := range t.Columns {
		s, ok := src[c]
		if !ok {
			return fmt.Sprintf("column %s not found on the source", c)
		}
		if !s.safe {
			return fmt.Sprintf("column %s is of type %s", c, s.name)
		}
		d, ok := dst[c]
		if !ok {
			return fmt.Sprintf("column %s not found on the target", c)
		}
		if d.oid != s.oid || d.typmod != s.typmod {
			return fmt.Sprintf("column %s is %s on the source, %s on the target", c, s.name, d.name)
		}
	}
	return ""
}

// copyOptions is the WITH clause of t's COPY statements on both sides.
func (t *table) copyOptions() string {
	if t.Binary {
		return " (FORMAT binary)"
	}
	return ""
}

// binarySignature opens every binary COPY stream.
var binarySignature = []byte("PGCOPY\n\xff\r\n\x00")

// errBinaryStream is returned for a binary COPY stream that does not
// follow the format.
var errBinaryStream = errors.New("malformed binary COPY data")

// binaryRows counts the tuples of a binary COPY stream fed to it in
// pieces of any size, as it passes: the 11-byte signature, a 32-bit flags
// field and a 32-bit header extension length, the extension; then per
// tuple a 16-bit field count and per field a 32-bit length (-1 for NULL)
// and that many bytes; then the trailer, a field count of -1
// (https://www.postgresql.org/docs/current/sql-copy.html, "Binary
// Format"). All integers are big-endian. The zero value expects the
// start of a stream.
type binaryRows struct {
	state  int
	buf    [19]byte // a header or integer split between two pieces
	have   int      // bytes of it gathered
	skip   int64    // bytes still to pass over: an extension or a field's value
	fields int      // fields of the current tuple still to read
}

const (
	binHeader = iota // the signature, flags and extension length
	binTuple         // a field count, or the trailer
	binField         // a field's length
	binDone          // after the trailer
)

// done tells whether the trailer was seen.
func (b *binaryRows) done() bool { return b.state == binDone && b.skip == 0 }

// feed reads p and returns how many tuples began in it.
func (b *binaryRows) feed(p []byte) (rows int64, err error) {
	for len(p) > 0 {
		if b.skip > 0 {
			k := min(int64(len(p)), b.skip)
			p, b.skip = p[k:], b.skip-k
			continue
		}
		var need int
		switch b.state {
		case binHeader:
			need = 19
		case binTuple:
			need = 2
		case binField:
			need = 4
		default:
			return rows, fmt.Errorf("%w: %d bytes after the trailer", errBinaryStream, len(p))
		}
		var v []byte
		if b.have == 0 && len(p) >= need {
			v, p = p[:need], p[need:]
		} else {
			k := copy(b.buf[b.have:need], p)
			b.have += k
			p = p[k:]
			if b.have < need {
				return rows, nil
			}
			v, b.have = b.buf[:need], 0
		}
		switch b.state {
		case binHeader:
			if string(v[:11]) != string(binarySignature) {
				return rows, fmt.Errorf("%w: no signature", errBinaryStream)
			}
			ext := int32(binary.BigEndian.Uint32(v[15:19]))
			if ext < 0 {
				return rows, fmt.Errorf("%w: header extension length %d", errBinaryStream, ext)
			}
			b.skip, b.state = int64(ext), binTuple
		case binTuple:
			n := int16(binary.BigEndian.Uint16(v))
			switch {
			case n == -1:
				b.state = binDone
			case n < 0:
				return rows, fmt.Errorf("%w: field count %d", errBinaryStream, n)
			default:
				rows++
				if n > 0 {
					b.fields, b.state = int(n), binField
				}
			}
		case binField:
			l := int32(binary.BigEndian.Uint32(v))
			if l < -1 {
				return rows, fmt.Errorf("%w: field length %d", errBinaryStream, l)
			}
			if l > 0 {
				b.skip = int64(l)
			}
			if b.fields--; b.fields == 0 {
				b.state = binTuple
			}
		}
	}
	return rows, nil
}
