package redisrdb

import (
	"encoding/binary"
	"hash/crc64"
)

// Redis checksums RDB files and DUMP payloads with CRC-64/Jones: polynomial
// 0xad93d23594c935a9, reflected, initial value 0, no final xor (src/crc64.c).
//
// hash/crc64 has the reflected table algorithm, but for a table other than
// ECMA and ISO it compares the 2 KiB table on every call of 64 bytes or
// more and builds a fresh 16 KiB slicing table on every call of 2 KiB or
// more: a cost paid once per key (DUMP payloads) and once per read of the
// RDB stream. So the slicing-by-8 tables are built here once, from the
// standard table, and the loop is the one Redis' own crc64.c speeds up
// the same way (crcspeed.c).
var jonesSlicing = func() *[8][256]uint64 {
	t := new([8][256]uint64)
	base := crc64.MakeTable(0x95ac9329ac4bc9b5) // the Jones polynomial, bit-reversed
	t[0] = *base
	for i := range 256 {
		crc := t[0][i]
		for k := 1; k < 8; k++ {
			crc = t[0][crc&0xff] ^ crc>>8
			t[k][i] = crc
		}
	}
	return t
}()

// CRC64 continues the Redis CRC-64 crc over p (start with 0).
func CRC64(crc uint64, p []byte) uint64 {
	t := jonesSlicing
	for len(p) >= 8 {
		crc ^= binary.LittleEndian.Uint64(p)
		crc = t[7][crc&0xff] ^
			t[6][crc>>8&0xff] ^
			t[5][crc>>16&0xff] ^
			t[4][crc>>24&0xff] ^
			t[3][crc>>32&0xff] ^
			t[2][crc>>40&0xff] ^
			t[1][crc>>48&0xff] ^
			t[0][crc>>56]
		p = p[8:]
	}
	for _, b := range p {
		crc = t[0][byte(crc)^b] ^ crc>>8
	}
	return crc
}
