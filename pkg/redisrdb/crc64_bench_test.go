package redisrdb_test

import (
	"fmt"
	"hash/crc64"
	"testing"

	"replicator/pkg/redisrdb"
)

// BenchmarkCRC64 compares the slicing-by-8 loop with hash/crc64 on a
// custom table, at a DUMP payload's size and at a stream read's.
func BenchmarkCRC64(b *testing.B) {
	tab := crc64.MakeTable(0x95ac9329ac4bc9b5)
	for _, n := range []int{120, 4096} {
		p := make([]byte, n)
		b.Run(fmt.Sprintf("slicing8/%dB", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				redisrdb.CRC64(0, p)
			}
		})
		b.Run(fmt.Sprintf("hash-crc64/%dB", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				crc64.Update(0, tab, p)
			}
		})
	}
}
