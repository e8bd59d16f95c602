package redisrdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Low-level reads. Every byte goes through consume, which keeps the running
// CRC and, while a key's value is being captured for RESTORE, its raw bytes.

func (d *Decoder) consume(p []byte) {
	d.offset += int64(len(p))
	if d.crcOn {
		d.crc = CRC64(d.crc, p)
	}
	if d.capturing {
		if int64(len(d.capture)+len(p)) > d.opts.CaptureRaw {
			d.capturing, d.capture = false, nil
		} else {
			d.capture = append(d.capture, p...)
		}
	}
}

func (d *Decoder) readByte() (byte, error) {
	b, err := d.r.ReadByte()
	if err != nil {
		return 0, eofErr(err)
	}
	d.one[0] = b
	d.consume(d.one[:])
	return b, nil
}

// readN reads n bytes into a new slice. The slice grows as data arrives, so
// a hostile length cannot make it allocate more than the input holds.
func (d *Decoder) readN(n uint64) ([]byte, error) {
	if n > uint64(d.opts.MaxStringBytes) {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, n, d.opts.MaxStringBytes)
	}
	size := int(n)
	// Start small and double: memory follows the bytes that arrived, never
	// the declared length alone.
	buf := make([]byte, 0, min(size, 64<<10))
	for len(buf) < size {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(size, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(d.r, buf[len(buf):cap(buf)])
		d.consume(buf[len(buf) : len(buf)+m])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, eofErr(err)
		}
	}
	return buf, nil
}

// readFixed reads exactly len(p) bytes into p.
func (d *Decoder) readFixed(p []byte) error {
	if _, err := io.ReadFull(d.r, p); err != nil {
		return eofErr(err)
	}
	d.consume(p)
	return nil
}

func eofErr(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: unexpected end of data", io.ErrUnexpectedEOF)
	}
	return err
}

// readLenEnc reads a length (src/rdb.c rdbLoadLenByRef). When encoded is
// true the value is a special string encoding (0 int8, 1 int16, 2 int32,
// 3 LZF) rather than a length.
func (d *Decoder) readLenEnc() (n uint64, encoded bool, err error) {
	b, err := d.readByte()
	if err != nil {
		return 0, false, err
	}
	switch b >> 6 {
	case 0:
		return uint64(b & 0x3f), false, nil
	case 1:
		b2, err := d.readByte()
		if err != nil {
			return 0, false, err
		}
		return uint64(b&0x3f)<<8 | uint64(b2), false, nil
	case 2:
		switch b {
		case 0x80:
			if err := d.readFixed(d.scratch[:4]); err != nil {
				return 0, false, err
			}
			return uint64(binary.BigEndian.Uint32(d.scratch[:4])), false, nil
		case 0x81:
			if err := d.readFixed(d.scratch[:8]); err != nil {
				return 0, false, err
			}
			return binary.BigEndian.Uint64(d.scratch[:8]), false, nil
		}
		return 0, false, fmt.Errorf("%w: unknown length prefix 0x%02x", ErrCorrupt, b)
	default:
		return uint64(b & 0x3f), true, nil
	}
}

// readLen reads a plain length.
func (d *Decoder) readLen() (uint64, error) {
	n, enc, err := d.readLenEnc()
	if err == nil && enc {
		err = fmt.Errorf("%w: string encoding where a length was expected", ErrCorrupt)
	}
	return n, err
}

// readString reads a string in any of its encodings.
func (d *Decoder) readString() ([]byte, error) {
	n, enc, err := d.readLenEnc()
	if err != nil {
		return nil, err
	}
	if !enc {
		return d.readN(n)
	}
	switch n {
	case 0:
		b, err := d.readByte()
		if err != nil {
			return nil, err
		}
		return strconv.AppendInt(nil, int64(int8(b)), 10), nil
	case 1:
		if err := d.readFixed(d.scratch[:2]); err != nil {
			return nil, err
		}
		return strconv.AppendInt(nil, int64(int16(binary.LittleEndian.Uint16(d.scratch[:2]))), 10), nil
	case 2:
		if err := d.readFixed(d.scratch[:4]); err != nil {
			return nil, err
		}
		return strconv.AppendInt(nil, int64(int32(binary.LittleEndian.Uint32(d.scratch[:4]))), 10), nil
	case 3:
		clen, err := d.readLen()
		if err != nil {
			return nil, err
		}
		ulen, err := d.readLen()
		if err != nil {
			return nil, err
		}
		if ulen > uint64(d.opts.MaxStringBytes) {
			return nil, fmt.Errorf("%w: LZF string of %d bytes (limit %d)", ErrTooLarge, ulen, d.opts.MaxStringBytes)
		}
		// One LZF back-reference (3 bytes) expands to at most 264 bytes, so
		// a larger ratio is a lie meant to make us allocate.
		if clen == 0 || ulen > clen*88+64 {
			return nil, fmt.Errorf("%w: LZF lengths %d/%d impossible", ErrCorrupt, clen, ulen)
		}
		comp, err := d.readN(clen)
		if err != nil {
			return nil, err
		}
		return lzfDecompress(comp, int(ulen))
	}
	return nil, fmt.Errorf("%w: unknown string encoding %d", ErrCorrupt, n)
}

// readMillis reads an 8-byte little-endian millisecond time.
func (d *Decoder) readMillis() (int64, error) {
	if err := d.readFixed(d.scratch[:8]); err != nil {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint64(d.scratch[:8])), nil
}

// readDoubleV1 reads the RDB_TYPE_ZSET score format: a length byte, with
// 253/254/255 meaning NaN/+inf/-inf, then that many ASCII characters.
func (d *Decoder) readDoubleV1() (float64, error) {
	n, err := d.readByte()
	if err != nil {
		return 0, err
	}
	switch n {
	case 253:
		return math.NaN(), nil
	case 254:
		return math.Inf(1), nil
	case 255:
		return math.Inf(-1), nil
	}
	buf := d.scratch[:n]
	if err := d.readFixed(buf); err != nil {
		return 0, err
	}
	return parseScore(buf)
}

func (d *Decoder) readDoubleV2() (float64, error) {
	if err := d.readFixed(d.scratch[:8]); err != nil {
		return 0, err
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(d.scratch[:8])), nil
}

func parseScore(b []byte) (float64, error) {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return 0, fmt.Errorf("%w: score %q is not a number", ErrCorrupt, b)
	}
	return f, nil
}
