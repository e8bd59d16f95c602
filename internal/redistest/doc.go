// Package redistest holds what the tests of the Redis packages share: RDB
// bytes built by hand from the Redis sources (src/rdb.h, ziplist.c,
// listpack.c, intset.c), a canonical text model of a keyspace built either
// from decoder events or from what a real redis-server serves, and helpers
// that compare two servers and wait for them to converge.
//
// It is for tests only; the servers come from internal/testenv.
//
// Usage:
//
//	b := &redistest.RDB{}
//	b.Byte(redistest.OpSelectDB).Len(0).Byte(0).Str("k").Str("v")
//	decoded, _, err := redistest.DecodeAll(bytes.NewReader(redistest.File(9, b.Bytes())))
//	...
//	redistest.CompareModels(t, decoded, redistest.ServerModel(t, srv))
package redistest
