// Package redisrdb reads the Redis RDB format: dump.rdb files, the
// full-sync transfer a master sends a replica, and (value part only) DUMP
// payloads. It does no I/O of its own beyond the io.Reader it is given and
// opens no connection; carrying the data to a server is package redissync.
//
// It owns the RDB decoder: a pull-based, streaming reader of RDB versions 1
// to 12 (Redis 1.x to 7.4) that follows Redis' own src/rdb.h and rdb.c,
// with the compact encodings of src/ziplist.c, listpack.c, intset.c,
// zipmap.c, quicklist.c and the stream layout of t_stream.c, LZF string
// compression (lzf_d.c) and the CRC-64 of crc64.c. Every opcode is handled
// (AUX, RESIZEDB, EXPIRETIME, EXPIRETIME_MS, SELECTDB, IDLE, FREQ,
// MODULE_AUX, FUNCTION2, SLOT_INFO, EOF) and every value type 0-25: strings
// (raw, integer, LZF), lists (linked, ziplist, quicklist v1/v2), sets
// (hashtable, intset, listpack), sorted sets (v1, v2, ziplist, listpack),
// hashes (hashtable, zipmap, ziplist, listpack, and the Redis 7.4 field-TTL
// types with their release-candidate variants), streams (listpacks v1-v3
// with consumer groups and PELs). A module value stops decoding with a
// ModuleError naming the module. Functions in the Redis 7.0
// release-candidate format (FUNCTION, opcode 246: name, engine, optional
// description, code) become the "#!engine name=..." source Redis 7.0 GA
// translates them to (src/rdb.c rdbFunctionLoad). The CRC-64 trailer is checked when the file has one (a
// zero checksum means the writer disabled it).
//
// DUMP payloads (src/cluster.c createDumpPayload: type byte, value body,
// 2-byte RDB version, CRC-64) are read by NewDumpDecoder, checked by
// DumpVersion and built from captured value bytes by EncodeDump.
// MinVersion says which RDB version a value encoding first appeared in, so
// a writer can tell whether a target can RESTORE it.
//
// Memory is bounded whatever the data: a collection is emitted in batches
// of Options.BatchItems members, so a 100-million-member set is never held;
// a single string or compact blob may not exceed Options.MaxStringBytes;
// a declared length is never allocated ahead of the bytes that back it.
// Corrupt or hostile input yields an error wrapping ErrCorrupt (or another
// of the package's sentinel errors) that names the key and offset; it
// never panics or loops (see FuzzDecode and FuzzDumpPayload).
//
// The Decoder is a pull iterator. Next returns false at the end of the RDB
// (after the checksum was checked) or on the first error, and Err tells
// the two apart (nil at a clean end). The Event returned by Event and the
// slices it holds (Key, Value, Items and their members) belong to the
// decoder and are valid until the next call to Next: a caller that keeps
// any of them copies it. KeyEnd's Raw is the exception: it is handed over
// (the decoder keeps no reference to it), so it can become a DUMP payload
// in place (AppendDump). A Decoder is not safe for concurrent use.
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
package redisrdb
