package redisrdb

import "hash/crc64"

// Redis checksums RDB files and DUMP payloads with CRC-64/Jones: polynomial
// 0xad93d23594c935a9, reflected, initial value 0, no final xor (src/crc64.c).
// hash/crc64 implements the reflected table algorithm but inverts the value
// before and after each update; inverting around the call cancels that.
var jonesTable = crc64.MakeTable(0x95ac9329ac4bc9b5) // the Jones polynomial, bit-reversed

// CRC64 continues the Redis CRC-64 crc over p (start with 0).
func CRC64(crc uint64, p []byte) uint64 {
	return ^crc64.Update(^crc, jonesTable, p)
}
