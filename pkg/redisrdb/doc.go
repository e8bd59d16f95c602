// Package redisrdb reads Redis RDB data, the format of dump.rdb files, of
// the full-sync transfer a master sends a replica, and (value part only) of
// DUMP payloads, and carries it to a target Redis.
//
// It owns the RDB decoder: a pull-based, streaming reader of RDB versions 1
// to 12 (Redis 1.x to 7.4) that follows Redis' own src/rdb.h and rdb.c,
// with the compact encodings of src/ziplist.c, listpack.c, intset.c,
// zipmap.c and the stream layout of t_stream.c. Every opcode is handled
// (AUX, RESIZEDB, EXPIRETIME, EXPIRETIME_MS, SELECTDB, IDLE, FREQ,
// MODULE_AUX, FUNCTION2, SLOT_INFO, EOF) and every value type 0-25: strings
// (raw, integer, LZF), lists (linked, ziplist, quicklist v1/v2), sets
// (hashtable, intset, listpack), sorted sets (v1, v2, ziplist, listpack),
// hashes (hashtable, zipmap, ziplist, listpack, and the Redis 7.4 field-TTL
// types with their release-candidate variants), streams (listpacks v1-v3
// with consumer groups and PELs). A module value stops decoding with a
// ModuleError naming the module. The CRC-64 trailer is checked when the
// file has one (a zero checksum means the writer disabled it).
//
// Memory is bounded whatever the data: a collection is emitted in batches
// of Options.BatchItems members, so a 100-million-member set is never held;
// a single string or compact blob may not exceed Options.MaxStringBytes;
// a declared length is never allocated ahead of the bytes that back it.
// Corrupt or hostile input yields an error naming the key and offset; it
// never panics or loops (see FuzzDecode and FuzzDumpPayload).
//
// It also owns the rest of `replicator redis sync`:
//
//   - Sources. PSYNC (psync.go): the importer acts as a replica over TCP or
//     TLS (REPLCONF listening-port, REPLCONF capa eof capa psync2,
//     PSYNC ? -1), reads +FULLRESYNC and the RDB in both transfer forms
//     ($<len> and diskless $EOF:<40-byte mark>), decoding it as it arrives.
//     An RDB file. SCAN + DUMP + PTTL (scan.go) when the source refuses
//     PSYNC; mode auto tries PSYNC first and logs why it fell back.
//   - Writer (writer.go, loader.go, native.go). Values are passed through:
//     the raw value bytes the decoder captured become a DUMP payload
//     (type byte + body + the target's RDB version + CRC-64) for
//     RESTORE key <abs-ms> payload ABSTTL REPLACE, when the target's RDB
//     version knows the value's encoding. Otherwise (an older target, e.g.
//     Valkey facing RDB 12 types) and for values over BigKeyBytes, native
//     commands in decoder-sized batches: DEL, then RPUSH/SADD/ZADD/HSET
//     (HPEXPIREAT for field TTLs), XADD/XSETID/XGROUP/XCLAIM for streams,
//     then PEXPIREAT. Keys already expired and empty collections are
//     skipped. Writes go over several pipelined connections; a key's jobs
//     always take the same connection so its pieces stay in order; bytes
//     in flight are bounded (MaxInflightBytes).
//   - Follow (follow.go). After a PSYNC snapshot the replication command
//     stream is applied in order on one target connection, REPLCONF ACK is
//     sent every second with the offset applied outside MULTI/EXEC, and a
//     dropped link resumes with PSYNC <replid> <offset+1>; when the source
//     answers FULLRESYNC instead, the target is flushed and reloaded (and
//     the log says so). In SCAN mode follow re-copies keys named by
//     keyspace notifications: best-effort, events during a disconnect are
//     lost.
//
// Limits: SCAN mode reads each value whole with DUMP, so its memory per key
// is the key's serialized size; the PSYNC and file paths never hold a value
// larger than BigKeyBytes (plus one decoder batch). Module values cannot be
// carried and stop the sync with an error naming the module.
//
// Usage:
//
//	d := redisrdb.NewDecoder(f, redisrdb.Options{})
//	for d.Next() {
//		ev := d.Event()
//		switch ev.Kind {
//		case redisrdb.KindKeyStart: // ev.DB, ev.Key, ev.Type, ev.ExpireAt; ev.Value for strings
//		case redisrdb.KindItems:    // ev.Items, a batch of members
//		case redisrdb.KindKeyEnd:   // ev.Count members; ev.Raw if captured
//		}
//	}
//	if err := d.Err(); err != nil { ... }
//
// and a whole sync (what `replicator redis sync` runs):
//
//	st, err := redisrdb.Sync(ctx, redisrdb.SyncConfig{
//		Source: srcOpts, Mode: "auto", Follow: true,
//		Writer: redisrdb.WriterConfig{Target: dstOpts},
//	}, log, redisrdb.NewMetrics(reg))
package redisrdb
