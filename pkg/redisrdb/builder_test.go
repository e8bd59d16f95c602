package redisrdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Builders of RDB bytes by hand, following src/rdb.h, ziplist.c,
// listpack.c and intset.c, for the table-driven tests.

type rb struct{ bytes.Buffer }

func (b *rb) byte(v ...byte) *rb { b.Write(v); return b }

func (b *rb) len(n uint64) *rb {
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

func (b *rb) str(s string) *rb { b.len(uint64(len(s))); b.WriteString(s); return b }
func (b *rb) raw(p []byte) *rb { b.len(uint64(len(p))); b.Write(p); return b }
func (b *rb) u64(v uint64) *rb { b.Write(binary.LittleEndian.AppendUint64(nil, v)); return b }

// rdbFile wraps a body in a header, EOF and a correct checksum.
func rdbFile(version int, body []byte) []byte {
	out := []byte(fmt.Sprintf("REDIS%04d", version))
	out = append(out, body...)
	out = append(out, opEOF)
	if version >= 5 {
		out = binary.LittleEndian.AppendUint64(out, CRC64(0, out))
	}
	return out
}

// ziplist builds a ziplist; int64 elements use the integer encodings,
// strings the string ones.
func ziplist(elems ...any) []byte {
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

// listpack builds a listpack.
func listpack(elems ...any) []byte {
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

func intset(width int, vals ...int64) []byte {
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

func streamID(ms, seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, ms)
	return binary.BigEndian.AppendUint64(b, seq)
}

func itoa(i int) string { return strconv.Itoa(i) }
