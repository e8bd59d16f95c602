// Package redissync carries a Redis keyspace to a target Redis and keeps
// it in sync: what `replicator redis sync` runs. It decodes with package
// redisrdb and owns everything that talks to a server.
//
// It follows the replica side of Redis replication (src/replication.c)
// and the RESP protocol of the command stream, and writes with RESTORE
// (the DUMP payload format of src/cluster.c) or ordinary commands.
//
//   - Sources. PSYNC (psync.go): the importer acts as a replica over TCP or
//     TLS (AUTH, REPLCONF listening-port, REPLCONF capa eof capa psync2,
//     PSYNC ? -1), reads +FULLRESYNC and the RDB in both transfer forms
//     ($<len> and diskless $EOF:<40-byte mark>), decoding it as it arrives.
//     An RDB file (sync.go). SCAN + DUMP + PTTL (scan.go) when the source
//     refuses PSYNC; mode auto tries PSYNC first and logs why it fell back
//     (live.go). SCAN runs on one cursor per database (a cursor cannot be
//     split safely, see scanSnapshot) and DUMP on ScanConnections
//     connections in parallel. A cluster source (clustersource.go) is
//     copied and followed shard by shard, in parallel, each master over
//     its own PSYNC link (or SCAN and subscription) with its own position.
//     A shard that cannot continue its stream is reloaded alone: the
//     target's keys of its slots are deleted and its RDB loaded again
//     while the others follow on (shardresync.go). A reshard of the
//     source stops the follow with the slots named (reshard.go).
//   - Cluster targets (cluster.go): detected from INFO cluster; keys routed
//     by slot, pipelines per shard, MOVED/ASK followed, slot map reloaded
//     on failover; keys outside database 0 stop the sync; cross-slot
//     transactions in the follow stream are split per slot (and counted).
//   - Loader (loader.go). Drives a decoder's events into the writer and,
//     per key, decides between RESTORE and native commands.
//   - Writer (writer.go, native.go). Values are passed through: the raw
//     value bytes the decoder captured become a DUMP payload (type byte +
//     body + the target's RDB version + CRC-64) for
//     RESTORE key <abs-ms> payload ABSTTL REPLACE, when the target's RDB
//     version knows the value's encoding. A string that fits BigKeyBytes
//     is one SET key value [PXAT <abs-ms>] instead (with a TTL only where
//     SET takes PXAT, Redis 6.2+): the same bytes and expiry, any older
//     key replaced, without the payload checksum and RDB decoding that
//     RESTORE costs the target. On a single-server target these one-key
//     pipelines go over a RESP connection of the writer's own (rawconn.go)
//     rather than go-redis. Otherwise (an older target, e.g.
//     Valkey facing RDB 12 types) and for values over BigKeyBytes, native
//     commands in decoder-sized batches: DEL, then RPUSH/SADD/ZADD/HSET
//     (HPEXPIREAT for field TTLs), XADD/XSETID/XGROUP/XCLAIM for streams,
//     then PEXPIREAT. Keys already expired and empty collections are
//     skipped. Writes go over several pipelined connections; a key's jobs
//     always take the same connection so its pieces stay in order; bytes
//     in flight are bounded (MaxInflightBytes). A natively written key is
//     one MULTI/EXEC (on a connection of its own while it spans several
//     batches): readers see it whole or not at all, and a refusal or error
//     mid-key leaves nothing of it. So is a big key SCAN mode reads in
//     pages. On a cluster target that connection goes to the master of the
//     key's slot; a failover during such a key fails it (and the sync).
//   - What Redis would refuse or lose. Hash fields whose own TTL has passed
//     are not written. Into a target without HPEXPIREAT (probed once with
//     COMMAND INFO) a live field TTL follows WriterConfig.HashFieldTTL:
//     refuse (FieldTTLError, before the key is written) or drop (written
//     without the TTL, counted, logged with examples). An RDB file that
//     repeats a key (duplicates.go) is refused before anything is written,
//     as Redis refuses it, unless SyncConfig.DuplicateKeys is last; finding
//     them costs a first read of the file and 16 bytes a key. An error after
//     keys were written says how many and to rerun with --flush-target.
//   - Follow (follow.go, resp.go). After a PSYNC snapshot the replication
//     command stream is parsed (RESP arrays of bulk strings, bounded per
//     command; see FuzzReplicationStream) and applied in order on one
//     target connection; REPLCONF ACK is sent every second with the offset
//     applied outside MULTI/EXEC, and a dropped link resumes with
//     PSYNC <replid> <offset+1> after a jittered backoff (1 s doubling to
//     30 s, github.com/cenkalti/backoff); when the source answers
//     FULLRESYNC instead, the target is flushed and reloaded (and the log
//     says so in one line, with the reason: replication ID changed, or
//     offset no longer in the backlog).
//   - Durable position (position.go, SyncConfig.DurablePosition). The
//     position (replid, offset, selected db) lives on the target in the
//     hash PositionKey, written inside the same MULTI/EXEC as the commands
//     it covers, so data and position never disagree. A restarted
//     follower (also after kill -9) resumes with PSYNC <replid> <offset+1>.
//     Chosen over a local state file: a file can only be written after the
//     target acknowledged a batch, and a crash between the two would apply
//     non-idempotent commands (INCR, RPUSH) twice. Costs: one HSET per
//     batch, and one key on the target that `redis verify` leaves out and
//     the operator deletes after cutover. On a cluster target, where a
//     MULTI/EXEC cannot span slots, a position key per slot written (in
//     that slot's transaction) and a floor per master
//     (clusterposition.go); a resume starts at the lowest floor and skips,
//     per slot, what that slot already holds.
//   - SCAN-mode follow (keyspace.go): keys named by keyspace notifications
//     are copied again; subscribed before the SCAN; a lost stretch of
//     events (re-subscription, or too many keys pending) is detected,
//     counted and repaired by a full re-SCAN. Guarantees and limits are
//     written there.
//   - Metrics (metrics.go): keys and bytes imported, follow lag and
//     applied offset, reconnects; built once per process by the command
//     (NewMetrics) and passed in SyncConfig.Metrics.
//
// Limits: SCAN mode reads each value whole with DUMP, so its memory per key
// is the key's serialized size; the PSYNC and file paths never hold a value
// larger than BigKeyBytes (plus one decoder batch). Module values cannot be
// carried and stop the sync with an error naming the module.
//
// Usage:
//
//	st, err := redissync.Sync(ctx, redissync.SyncConfig{
//		Source: srcOpts, Mode: "auto", Follow: true,
//		Writer: redissync.WriterConfig{Target: dstOpts},
//		Metrics: m, // redissync.NewMetrics(reg), once per process
//	}, log)
package redissync
