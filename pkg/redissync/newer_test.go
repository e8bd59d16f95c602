package redissync_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"replicator/internal/redistest"
	"replicator/pkg/redisrdb"
	"replicator/pkg/redissync"
)

// TestSyncNewerRDBToOlderTarget imports an RDB 12 file (Redis 7.4 types
// the installed 7.0 cannot RESTORE) into the 7.0 target: those keys must
// arrive through native commands, exactly.
func TestSyncNewerRDBToOlderTarget(t *testing.T) {
	b := &redistest.RDB{}
	b.Byte(redistest.OpAux).Str("redis-ver").Str("7.4.0")
	b.Byte(redistest.OpSelectDB).Len(0)
	b.Byte(20).Str("set-lp").Raw(redistest.Listpack("b", "a", int64(1)))
	b.Byte(redistest.OpExpireTimeMs).U64(4102444800000) // 2100-01-01
	b.Byte(24).Str("hash-meta").U64(0).Len(2).Len(0).Str("f1").Str("v1").Len(0).Str("f2").Str("v2")
	b.Byte(25).Str("hash-lpex").U64(0).Raw(redistest.Listpack("a", "1", int64(0), "b", "2", int64(0)))
	b.Byte(redistest.OpSelectDB).Len(1)
	redistest.StreamBody(b, 21)
	b.Byte(0).Str("plain").Str("string")
	file := filepath.Join(t.TempDir(), "v12.rdb")
	data := redistest.File(12, b.Bytes())
	os.WriteFile(file, data, 0o600)

	redistest.FlushAll(t, dst)
	st, err := redissync.Sync(context.Background(), redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Native != 4 || st.Strings != 1 || st.Restored != 0 {
		t.Errorf("native %d strings %d restored %d; want the four 7.4 types native and the string in one SET", st.Native, st.Strings, st.Restored)
	}
	f, _ := os.Open(file)
	defer f.Close()
	decoded, _, err := redistest.DecodeAll(f)
	if err != nil {
		t.Fatal(err)
	}
	served := redistest.ServerModel(t, dst)
	// The target derives the group's PEL delivery time etc. from XCLAIM;
	// the model compares entries, IDs, groups, consumers and PEL counts.
	redistest.CompareModels(t, decoded, served)

	// A target that claims RDB 12 but refuses the payloads (as a wrong
	// version guess would): every refused RESTORE is redone natively.
	redistest.FlushAll(t, dst)
	if _, err := redissync.Sync(context.Background(), redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst), TargetRDBVersion: 12}}, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	redistest.CompareModels(t, decoded, redistest.ServerModel(t, dst))

	// A field TTL cannot be carried to a server without HPEXPIREAT: the
	// error names the key and the command.
	b = &redistest.RDB{}
	b.Byte(24).Str("hfe").U64(4102444800000).Len(1).Len(1).Str("f").Str("v")
	os.WriteFile(file, redistest.File(12, b.Bytes()), 0o600)
	_, err = redissync.Sync(context.Background(), redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), `"hfe"`) || !strings.Contains(err.Error(), "HPEXPIREAT") {
		t.Errorf("field TTL on an old target: %v", err)
	}
}

// Keys already expired in the RDB and empty collections are not written,
// and stale copies of them on the target are removed.
func TestSyncSkipsExpiredAndEmpty(t *testing.T) {
	b := &redistest.RDB{}
	b.Byte(redistest.OpExpireTimeMs).U64(1000).Byte(0).Str("gone").Str("v")
	b.Byte(2).Str("emptyset").Len(0)
	b.Byte(0).Str("kept").Str("v")
	file := filepath.Join(t.TempDir(), "x.rdb")
	os.WriteFile(file, redistest.File(9, b.Bytes()), 0o600)
	redistest.FlushAll(t, dst)
	c := dst.Client(0)
	defer c.Close()
	ctx := context.Background()
	c.Set(ctx, "gone", "stale", 0)
	c.SAdd(ctx, "emptyset", "stale")
	st, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.SkippedExpired != 1 || st.SkippedEmpty != 1 || st.Keys != 1 {
		t.Errorf("stats %+v", st)
	}
	if n := c.Exists(ctx, "gone", "emptyset").Val(); n != 0 {
		t.Errorf("%d stale keys left on the target", n)
	}
	if c.Get(ctx, "kept").Val() != "v" {
		t.Error("kept key missing")
	}
}

// Strings are written with SET key value [PXAT ms], not RESTORE: the
// target ends with the source's bytes (plain, integer-encoded, LZF
// compressed on the source, binary, empty) and exact absolute expiries,
// and an older key of the same name, of another type or with a TTL of
// its own, is replaced whole.
func TestSyncStringsBySET(t *testing.T) {
	s := startExtra(t)
	ctx := context.Background()
	c := s.Client(0)
	defer c.Close()
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	strs := map[string]string{"str:plain": "v", "str:int": "-9223372036854775808", "str:lzf": strings.Repeat("compressible-", 300),
		"str:binary": "\x00\xff\r\n", "str:empty": "", "str:ttl": "expiring"}
	for k, v := range strs {
		if err := c.Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.PExpireAt(ctx, "str:ttl", at).Err(); err != nil {
		t.Fatal(err)
	}
	redistest.FlushAll(t, dst)
	tc := dst.Client(0)
	defer tc.Close()
	if err := tc.HSet(ctx, "str:plain", "stale", "hash").Err(); err != nil {
		t.Fatal(err)
	}
	if err := tc.Set(ctx, "str:int", "stale", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	st, err := redissync.Sync(ctx, redissync.SyncConfig{Source: sourceOptionsOf(s), Mode: "psync", Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Strings != int64(len(strs)) || st.Restored != 0 || st.Native != 0 {
		t.Errorf("strings %d restored %d native %d; want all %d strings by SET", st.Strings, st.Restored, st.Native, len(strs))
	}
	for k, v := range strs {
		if got, err := tc.Get(ctx, k).Result(); err != nil || got != v {
			t.Errorf("%s on the target = %q (%v), want %q", k, got, err, v)
		}
	}
	if got := tc.Do(ctx, "PEXPIRETIME", "str:ttl").Val(); got != at.UnixMilli() {
		t.Errorf("str:ttl expires at %v on the target, want %d", got, at.UnixMilli())
	}
	if got := tc.Do(ctx, "PEXPIRETIME", "str:int").Val(); got != int64(-1) {
		t.Errorf("str:int expires at %v on the target, want no expiry (the older key's TTL replaced)", got)
	}
	redistest.AssertIdentical(t, s, dst)
}

// TestWriterClosesConnectionsOnFailedFallback: a RESTORE the target
// refuses whose native rewrite fails too (a field TTL the 7.0 target
// cannot keep) stops the writer, naming the key, and leaves none of the
// writer's connections open on the target while it waits to be closed.
func TestWriterClosesConnectionsOnFailedFallback(t *testing.T) {
	b := &redistest.RDB{}
	b.Byte(redistest.OpSelectDB).Len(0)
	b.Byte(24).Str("hfe").U64(farFuture).Len(1).Len(1).Str("f").Str("v")
	file := filepath.Join(t.TempDir(), "hfe.rdb")
	if err := os.WriteFile(file, redistest.File(12, b.Bytes()), 0o600); err != nil {
		t.Fatal(err)
	}
	tgt := startExtra(t)
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	// Version 12 claimed: the hash goes as a RESTORE, which 7.0 refuses.
	w, err := redissync.NewWriter(ctx, redissync.WriterConfig{Target: sourceOptionsOf(tgt), TargetRDBVersion: 12, Connections: 1}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := redissync.Load(ctx, redisrdb.NewDecoder(f, redisrdb.Options{CaptureRaw: 1 << 20}), w, 1<<20, log); err != nil {
		t.Fatal(err)
	}
	err = w.Flush()
	var fe *redissync.FieldTTLError
	if !errors.As(err, &fe) || fe.Key != "hfe" {
		t.Fatalf("flush: %v; want the field TTL refusal of key hfe", err)
	}
	c := tgt.Client(0)
	defer c.Close()
	self, err := c.ClientID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
		if !strings.HasPrefix(l, fmt.Sprintf("id=%d ", self)) {
			t.Errorf("a connection of the failed writer is still open on the target: %s", l)
		}
	}
	if n := c.DBSize(ctx).Val(); n != 0 {
		t.Errorf("target holds %d keys after the refusal, want none", n)
	}
}
