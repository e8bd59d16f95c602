package redistest

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"replicator/pkg/redisrdb"
)

// Builders of RDB bytes by hand, following src/rdb.h, ziplist.c,
// listpack.c and intset.c, for the table-driven tests. They are written
// from the Redis sources, not from the decoder, so the two check each
// other.

// Opcodes of src/rdb.h that are not value types.
const (
	OpSlotInfo      = 244
	OpFunction2     = 245
	OpFunctionPreGA = 246
	OpModuleAux     = 247
	OpIdle          = 248
	OpFreq          = 249
	OpAux           = 250
	OpResizeDB      = 251
	OpExpireTimeMs  = 252
	OpExpireTime    = 253
	OpSelectDB      = 254
	OpEOF           = 255
)

// RDB accumulates the bytes of an RDB body; its methods append one
// element each and return b, so records read as one chain:
//
//	b := &redistest.RDB{}
//	b.Byte(0).Str("key").Str("value") // a string key
type RDB struct{ bytes.Buffer }

// Byte appends raw bytes (an opcode, a type byte, a fixed-width field).
func (b *RDB) Byte(v ...byte) *RDB { b.Write(v); return b }

// Len appends a length in the RDB length encoding (rdbSaveLen).
func (b *RDB) Len(n uint64) *RDB {
	switch {
	case n < 1<<6:
		b.WriteByte(byte(n))
	case n < 1<<14:
		b.WriteByte(byte(n>>8) | 0x40)
		b.WriteByte(byte(n))
	case n <= 0xffffffff:
		b.WriteByte(0x80)
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(n)))
	default:
		b.WriteByte(0x81)
		b.Write(binary.BigEndian.AppendUint64(nil, n))
	}
	return b
}

// Str appends a length-prefixed string.
func (b *RDB) Str(s string) *RDB { b.Len(uint64(len(s))); b.WriteString(s); return b }

// Raw appends a length-prefixed blob (a ziplist, listpack or intset).
func (b *RDB) Raw(p []byte) *RDB { b.Len(uint64(len(p))); b.Write(p); return b }

// U64 appends a little-endian 64-bit value (milliseconds, a binary double).
func (b *RDB) U64(v uint64) *RDB { b.Write(binary.LittleEndian.AppendUint64(nil, v)); return b }

// File wraps a body in a header, EOF and a correct checksum.
func File(version int, body []byte) []byte {
	out := []byte(fmt.Sprintf("REDIS%04d", version))
	out = append(out, body...)
	out = append(out, OpEOF)
	if version >= 5 {
		out = binary.LittleEndian.AppendUint64(out, redisrdb.CRC64(0, out))
	}
	return out
}

// Ziplist builds a ziplist; int64 elements use the integer encodings,
// strings the string ones.
func Ziplist(elems ...any) []byte {
	var body []byte
	prev := 0
	for _, e := range elems {
		var entry []byte
		if prev < 254 {
			entry = append(entry, byte(prev))
		} else {
			entry = append(entry, 0xfe)
			entry = binary.LittleEndian.AppendUint32(entry, uint32(prev))
		}
		switch v := e.(type) {
		case string:
			switch {
			case len(v) < 64:
				entry = append(entry, byte(len(v)))
			case len(v) < 16384:
				entry = append(entry, byte(len(v)>>8)|0x40, byte(len(v)))
			default:
				entry = append(entry, 0x80)
				entry = binary.BigEndian.AppendUint32(entry, uint32(len(v)))
			}
			entry = append(entry, v...)
		case int64:
			switch {
			case v >= 0 && v <= 12:
				entry = append(entry, 0xf1+byte(v))
			case v >= -128 && v <= 127:
				entry = append(entry, 0xfe, byte(v))
			case v >= -32768 && v <= 32767:
				entry = append(entry, 0xc0)
				entry = binary.LittleEndian.AppendUint16(entry, uint16(v))
			case v >= -(1<<23) && v < 1<<23:
				entry = append(entry, 0xf0, byte(v), byte(v>>8), byte(v>>16))
			case v >= -(1<<31) && v < 1<<31:
				entry = append(entry, 0xd0)
				entry = binary.LittleEndian.AppendUint32(entry, uint32(v))
			default:
				entry = append(entry, 0xe0)
				entry = binary.LittleEndian.AppendUint64(entry, uint64(v))
			}
		}
		prev = len(entry)
		body = append(body, entry...)
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(11+len(body)))
	out = binary.LittleEndian.AppendUint32(out, 0) // tail offset, unused by readers here
	out = binary.LittleEndian.AppendUint16(out, uint16(len(elems)))
	out = append(out, body...)
	return append(out, 0xff)
}

// Listpack builds a listpack; int64 elements use the integer encodings,
// strings the string ones.
func Listpack(elems ...any) []byte {
	var body []byte
	for _, e := range elems {
		var entry []byte
		switch v := e.(type) {
		case string:
			switch {
			case len(v) < 64:
				entry = append(entry, 0x80|byte(len(v)))
			case len(v) < 4096:
				entry = append(entry, 0xe0|byte(len(v)>>8), byte(len(v)))
			default:
				entry = append(entry, 0xf0)
				entry = binary.LittleEndian.AppendUint32(entry, uint32(len(v)))
			}
			entry = append(entry, v...)
		case int64:
			switch {
			case v >= 0 && v <= 127:
				entry = append(entry, byte(v))
			case v >= -4096 && v <= 4095:
				u := uint16(v) & 0x1fff
				entry = append(entry, 0xc0|byte(u>>8), byte(u))
			case v >= -32768 && v <= 32767:
				entry = append(entry, 0xf1)
				entry = binary.LittleEndian.AppendUint16(entry, uint16(v))
			case v >= -(1<<23) && v < 1<<23:
				entry = append(entry, 0xf2, byte(v), byte(v>>8), byte(v>>16))
			case v >= -(1<<31) && v < 1<<31:
				entry = append(entry, 0xf3)
				entry = binary.LittleEndian.AppendUint32(entry, uint32(v))
			default:
				entry = append(entry, 0xf4)
				entry = binary.LittleEndian.AppendUint64(entry, uint64(v))
			}
		}
		l := len(entry)
		// backlen, most significant 7-bit group first, high bit marks continuation
		var back []byte
		for n := l; ; n >>= 7 {
			back = append([]byte{byte(n & 127)}, back...)
			if n < 128 {
				break
			}
		}
		for i := 1; i < len(back); i++ {
			back[i] |= 128
		}
		body = append(body, entry...)
		body = append(body, back...)
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(7+len(body)))
	out = binary.LittleEndian.AppendUint16(out, uint16(len(elems)))
	out = append(out, body...)
	return append(out, 0xff)
}

// Intset builds an intset of width bytes (2, 4 or 8) per value.
func Intset(width int, vals ...int64) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(width))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(vals)))
	for _, v := range vals {
		switch width {
		case 2:
			out = binary.LittleEndian.AppendUint16(out, uint16(v))
		case 4:
			out = binary.LittleEndian.AppendUint32(out, uint32(v))
		default:
			out = binary.LittleEndian.AppendUint64(out, uint64(v))
		}
	}
	return out
}

// StreamID is the 16-byte big-endian form of a stream ID (radix-tree keys
// and PEL entries).
func StreamID(ms, seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, ms)
	return binary.BigEndian.AppendUint64(b, seq)
}

// StreamBody appends a stream key "x" of value type typ (15, 19 or 21)
// with one node of three live entries (one with its own fields, two using
// the master fields) and one deleted entry, and one group with one
// consumer owning one pending entry.
func StreamBody(b *RDB, typ byte) {
	lp := Listpack(
		int64(3), int64(1), int64(2), "f", "g", int64(0), // master: count, deleted, 2 fields, terminator
		int64(2), int64(0), int64(1), "a", "b", int64(3), // SAMEFIELDS, id 5-1
		int64(2), int64(0), int64(2), "c", "d", int64(3), // SAMEFIELDS, id 5-2
		int64(3), int64(0), int64(3), "z", "z", int64(3), // deleted + SAMEFIELDS, id 5-3
		int64(0), int64(0), int64(4), int64(1), "h", "e", int64(5), // own fields, id 5-4
	)
	b.Byte(typ).Str("x").Len(1).Raw(StreamID(5, 0)).Raw(lp)
	b.Len(3).Len(5).Len(4) // length, last id
	if typ >= 19 {
		b.Len(5).Len(1).Len(5).Len(3).Len(4) // first id, max deleted, entries added
	}
	b.Len(1).Str("g1").Len(5).Len(2) // one group, last delivered 5-2
	if typ >= 19 {
		b.Len(2) // entries read
	}
	b.Len(1).Byte(StreamID(5, 1)...).U64(1700000000000).Len(2) // group PEL
	b.Len(1).Str("alice").U64(1700000000001)                   // one consumer
	if typ >= 21 {
		b.U64(1700000000002)
	}
	b.Len(1).Byte(StreamID(5, 1)...)
}
