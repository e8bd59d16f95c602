// Package redisverify compares two Redis servers key by key, the proof
// step after `redis sync`. It computes every digest client-side from
// ordinary read commands (GET, LRANGE, SSCAN, HSCAN, ZSCAN, XRANGE, XINFO),
// because ElastiCache blocks DEBUG DIGEST.
//
// Per database it compares key counts; then for every key of the source
// (or a random sample) the type, a SHA-256 digest of the value and the TTL
// within a tolerance; in a full run it also lists keys only the target has.
// Collections are read in pages and digested without being held: ordered
// types (list, stream) hash in order, unordered ones (set, hash, zset) XOR
// the hashes of their members, so member order on either server does not
// matter and memory stays bounded. The follower's position keys on the
// target (redissync.IsPositionKey, database 0) are not data and are left
// out.
//
// When either side is a Redis Cluster the comparison runs shard by shard
// (cluster.go): every source master is scanned on its own connection and
// compared with the target node serving each key's slot.
//
// Usage:
//
//	rep, err := redisverify.Run(ctx, redisverify.Config{Source: src, Target: dst}, log)
//	if err != nil { ... }
//	rep.Write(os.Stdout, "text")
//	if !rep.Identical() { ... exit 1 ... }
package redisverify
