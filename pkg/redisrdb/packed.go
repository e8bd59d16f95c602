package redisrdb

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Iterators over the compact encodings Redis stores as one string: ziplist
// (src/ziplist.c), listpack (src/listpack.c), intset (src/intset.c) and
// zipmap (src/zipmap.c). Each checks every length against the blob before
// using it, so a corrupt blob yields an error, never a panic, and every step
// advances, so iteration always ends.

// packedIter yields the elements of a compact encoding in order. An element
// is a string or an integer; str returns it as Redis would print it.
type packedIter interface {
	next() (e packedEntry, ok bool, err error)
}

type packedEntry struct {
	s     []byte
	i     int64
	isInt bool
}

func (e packedEntry) bytes() []byte {
	if e.isInt {
		return strconv.AppendInt(nil, e.i, 10)
	}
	return e.s
}

func (e packedEntry) int() (int64, bool) {
	if e.isInt {
		return e.i, true
	}
	v, err := strconv.ParseInt(string(e.s), 10, 64)
	return v, err == nil
}

func (e packedEntry) float() (float64, error) {
	if e.isInt {
		return float64(e.i), nil
	}
	return parseScore(e.s)
}

func corrupt(what string, args ...any) error {
	return fmt.Errorf("%w: "+what, append([]any{ErrCorrupt}, args...)...)
}

// ---- ziplist ----

type ziplistIter struct {
	b   []byte
	pos int
}

func newZiplist(b []byte) (*ziplistIter, error) {
	if len(b) < 11 {
		return nil, corrupt("ziplist of %d bytes is shorter than its header", len(b))
	}
	if int(binary.LittleEndian.Uint32(b)) != len(b) {
		return nil, corrupt("ziplist header says %d bytes, blob has %d", binary.LittleEndian.Uint32(b), len(b))
	}
	if b[len(b)-1] != 0xff {
		return nil, corrupt("ziplist does not end with 0xff")
	}
	return &ziplistIter{b: b, pos: 10}, nil
}

func (z *ziplistIter) need(n int) error {
	if n < 0 || z.pos+n > len(z.b)-1 {
		return corrupt("ziplist entry at %d runs past the end", z.pos)
	}
	return nil
}

func (z *ziplistIter) next() (packedEntry, bool, error) {
	if z.pos >= len(z.b)-1 {
		if z.b[z.pos] != 0xff || z.pos != len(z.b)-1 {
			return packedEntry{}, false, corrupt("ziplist end marker misplaced")
		}
		return packedEntry{}, false, nil
	}
	if z.b[z.pos] == 0xff {
		return packedEntry{}, false, corrupt("ziplist end marker at %d before the end", z.pos)
	}
	// prevlen: 1 byte, or 0xfe followed by 4 bytes.
	if z.b[z.pos] == 0xfe {
		if err := z.need(5); err != nil {
			return packedEntry{}, false, err
		}
		z.pos += 5
	} else {
		z.pos++
	}
	if err := z.need(1); err != nil {
		return packedEntry{}, false, err
	}
	enc := z.b[z.pos]
	z.pos++
	var e packedEntry
	strLen := -1
	switch {
	case enc>>6 == 0:
		strLen = int(enc & 0x3f)
	case enc>>6 == 1:
		if err := z.need(1); err != nil {
			return e, false, err
		}
		strLen = int(enc&0x3f)<<8 | int(z.b[z.pos])
		z.pos++
	case enc == 0x80:
		if err := z.need(4); err != nil {
			return e, false, err
		}
		strLen = int(binary.BigEndian.Uint32(z.b[z.pos:]))
		z.pos += 4
	case enc == 0xc0:
		if err := z.need(2); err != nil {
			return e, false, err
		}
		e = packedEntry{i: int64(int16(binary.LittleEndian.Uint16(z.b[z.pos:]))), isInt: true}
		z.pos += 2
	case enc == 0xd0:
		if err := z.need(4); err != nil {
			return e, false, err
		}
		e = packedEntry{i: int64(int32(binary.LittleEndian.Uint32(z.b[z.pos:]))), isInt: true}
		z.pos += 4
	case enc == 0xe0:
		if err := z.need(8); err != nil {
			return e, false, err
		}
		e = packedEntry{i: int64(binary.LittleEndian.Uint64(z.b[z.pos:])), isInt: true}
		z.pos += 8
	case enc == 0xf0:
		if err := z.need(3); err != nil {
			return e, false, err
		}
		v := int32(uint32(z.b[z.pos])<<8|uint32(z.b[z.pos+1])<<16|uint32(z.b[z.pos+2])<<24) >> 8
		e = packedEntry{i: int64(v), isInt: true}
		z.pos += 3
	case enc == 0xfe:
		if err := z.need(1); err != nil {
			return e, false, err
		}
		e = packedEntry{i: int64(int8(z.b[z.pos])), isInt: true}
		z.pos++
	case enc >= 0xf1 && enc <= 0xfd:
		e = packedEntry{i: int64(enc&0x0f) - 1, isInt: true}
	default:
		return e, false, corrupt("ziplist entry encoding 0x%02x unknown", enc)
	}
	if strLen >= 0 {
		if err := z.need(strLen); err != nil {
			return e, false, err
		}
		e = packedEntry{s: z.b[z.pos : z.pos+strLen]}
		z.pos += strLen
	}
	return e, true, nil
}

// ---- listpack ----

type listpackIter struct {
	b   []byte
	pos int
}

func newListpack(b []byte) (*listpackIter, error) {
	if len(b) < 7 {
		return nil, corrupt("listpack of %d bytes is shorter than its header", len(b))
	}
	if int(binary.LittleEndian.Uint32(b)) != len(b) {
		return nil, corrupt("listpack header says %d bytes, blob has %d", binary.LittleEndian.Uint32(b), len(b))
	}
	if b[len(b)-1] != 0xff {
		return nil, corrupt("listpack does not end with 0xff")
	}
	return &listpackIter{b: b, pos: 6}, nil
}

func (l *listpackIter) need(n int) error {
	if n < 0 || l.pos+n > len(l.b)-1 {
		return corrupt("listpack entry at %d runs past the end", l.pos)
	}
	return nil
}

func (l *listpackIter) next() (packedEntry, bool, error) {
	var e packedEntry
	if l.pos >= len(l.b)-1 {
		return e, false, nil
	}
	start := l.pos
	enc := l.b[l.pos]
	if enc == 0xff {
		return e, false, corrupt("listpack end marker at %d before the end", l.pos)
	}
	hdr, strLen := 1, -1
	switch {
	case enc&0x80 == 0:
		e = packedEntry{i: int64(enc & 0x7f), isInt: true}
	case enc&0xc0 == 0x80:
		strLen = int(enc & 0x3f)
	case enc&0xe0 == 0xc0:
		if err := l.need(2); err != nil {
			return e, false, err
		}
		v := int64(enc&0x1f)<<8 | int64(l.b[l.pos+1])
		if v >= 1<<12 {
			v -= 1 << 13
		}
		e, hdr = packedEntry{i: v, isInt: true}, 2
	case enc&0xf0 == 0xe0:
		if err := l.need(2); err != nil {
			return e, false, err
		}
		strLen, hdr = int(enc&0x0f)<<8|int(l.b[l.pos+1]), 2
	case enc == 0xf0:
		if err := l.need(5); err != nil {
			return e, false, err
		}
		n := binary.LittleEndian.Uint32(l.b[l.pos+1:])
		if n > uint32(len(l.b)) {
			return e, false, corrupt("listpack string of %d bytes in a %d-byte listpack", n, len(l.b))
		}
		strLen, hdr = int(n), 5
	case enc >= 0xf1 && enc <= 0xf4:
		size := [...]int{2, 3, 4, 8}[enc-0xf1]
		if err := l.need(1 + size); err != nil {
			return e, false, err
		}
		p := l.b[l.pos+1 : l.pos+1+size]
		var v int64
		switch size {
		case 2:
			v = int64(int16(binary.LittleEndian.Uint16(p)))
		case 3:
			v = int64(int32(uint32(p[0])<<8|uint32(p[1])<<16|uint32(p[2])<<24) >> 8)
		case 4:
			v = int64(int32(binary.LittleEndian.Uint32(p)))
		case 8:
			v = int64(binary.LittleEndian.Uint64(p))
		}
		e, hdr = packedEntry{i: v, isInt: true}, 1+size
	default:
		return e, false, corrupt("listpack entry encoding 0x%02x unknown", enc)
	}
	size := hdr
	if strLen >= 0 {
		size += strLen
	}
	if err := l.need(size); err != nil {
		return e, false, err
	}
	if strLen >= 0 {
		e = packedEntry{s: l.b[start+hdr : start+hdr+strLen]}
	}
	// The entry ends with its own length written backwards (1-5 bytes).
	back := backlenSize(size)
	l.pos = start + size
	if err := l.need(back); err != nil {
		return e, false, err
	}
	l.pos += back
	return e, true, nil
}

// ---- intset ----

type intsetIter struct {
	b     []byte
	width int
	pos   int
}

func newIntset(b []byte) (*intsetIter, error) {
	if len(b) < 8 {
		return nil, corrupt("intset of %d bytes is shorter than its header", len(b))
	}
	width := int(binary.LittleEndian.Uint32(b))
	if width != 2 && width != 4 && width != 8 {
		return nil, corrupt("intset element width %d", width)
	}
	n := uint64(binary.LittleEndian.Uint32(b[4:]))
	if n*uint64(width)+8 != uint64(len(b)) {
		return nil, corrupt("intset says %d elements of %d bytes in %d bytes", n, width, len(b))
	}
	return &intsetIter{b: b, width: width, pos: 8}, nil
}

func (s *intsetIter) next() (packedEntry, bool, error) {
	if s.pos >= len(s.b) {
		return packedEntry{}, false, nil
	}
	p := s.b[s.pos : s.pos+s.width]
	s.pos += s.width
	var v int64
	switch s.width {
	case 2:
		v = int64(int16(binary.LittleEndian.Uint16(p)))
	case 4:
		v = int64(int32(binary.LittleEndian.Uint32(p)))
	default:
		v = int64(binary.LittleEndian.Uint64(p))
	}
	return packedEntry{i: v, isInt: true}, true, nil
}

// ---- zipmap (hashes written by Redis before 2.6) ----

type zipmapIter struct {
	b      []byte
	pos    int
	wantV  bool // the next element is a value (followed by its free bytes)
	header bool
}

func newZipmap(b []byte) (*zipmapIter, error) {
	if len(b) < 2 || b[len(b)-1] != 0xff {
		return nil, corrupt("zipmap malformed")
	}
	return &zipmapIter{b: b, pos: 1}, nil
}

func (z *zipmapIter) next() (packedEntry, bool, error) {
	if z.pos >= len(z.b) {
		return packedEntry{}, false, corrupt("zipmap has no end marker")
	}
	if z.b[z.pos] == 0xff {
		if z.wantV || z.pos != len(z.b)-1 {
			return packedEntry{}, false, corrupt("zipmap ends inside an entry")
		}
		return packedEntry{}, false, nil
	}
	n := int(z.b[z.pos])
	z.pos++
	if n == 254 {
		if z.pos+4 > len(z.b) {
			return packedEntry{}, false, corrupt("zipmap length runs past the end")
		}
		n = int(binary.LittleEndian.Uint32(z.b[z.pos:]))
		z.pos += 4
	} else if n == 255 {
		return packedEntry{}, false, corrupt("zipmap length 255")
	}
	free := 0
	if z.wantV {
		if z.pos >= len(z.b) {
			return packedEntry{}, false, corrupt("zipmap free byte missing")
		}
		free = int(z.b[z.pos])
		z.pos++
	}
	if n < 0 || z.pos+n+free > len(z.b)-1 {
		return packedEntry{}, false, corrupt("zipmap entry runs past the end")
	}
	e := packedEntry{s: z.b[z.pos : z.pos+n]}
	z.pos += n + free
	z.wantV = !z.wantV
	return e, true, nil
}

// backlenSize is how many bytes listpack uses to store an entry length
// backwards (src/listpack.c lpEncodeBacklen).
func backlenSize(l int) int {
	switch {
	case l <= 127:
		return 1
	case l < 16383:
		return 2
	case l < 2097151:
		return 3
	case l < 268435455:
		return 4
	}
	return 5
}
