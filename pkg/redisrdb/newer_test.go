package redisrdb

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

// TestSyncNewerRDBToOlderTarget imports an RDB 12 file (Redis 7.4 types
// the installed 7.0 cannot RESTORE) into the 7.0 target: those keys must
// arrive through native commands, exactly.
func TestSyncNewerRDBToOlderTarget(t *testing.T) {
	b := &rb{}
	b.byte(opAux).str("redis-ver").str("7.4.0")
	b.byte(opSelectDB).len(0)
	b.byte(20).str("set-lp").raw(listpack("b", "a", int64(1)))
	b.byte(opExpireTimeMs).u64(4102444800000) // 2100-01-01
	b.byte(24).str("hash-meta").u64(0).len(2).len(0).str("f1").str("v1").len(0).str("f2").str("v2")
	b.byte(25).str("hash-lpex").u64(0).raw(listpack("a", "1", int64(0), "b", "2", int64(0)))
	b.byte(opSelectDB).len(1)
	streamBody(b, 21)
	b.byte(0).str("plain").str("string")
	file := filepath.Join(t.TempDir(), "v12.rdb")
	data := rdbFile(12, b.Bytes())
	os.WriteFile(file, data, 0o600)

	flushAll(t, dst)
	st, err := Sync(context.Background(), SyncConfig{RDBFile: file, Writer: WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Native != 4 || st.Restored != 1 {
		t.Errorf("native %d restored %d; want the four 7.4 types native and the string restored", st.Native, st.Restored)
	}
	f, _ := os.Open(file)
	defer f.Close()
	decoded, _, err := decodeAll(f)
	if err != nil {
		t.Fatal(err)
	}
	served := serverModel(t, dst)
	// The target derives the group's PEL delivery time etc. from XCLAIM;
	// the model compares entries, IDs, groups, consumers and PEL counts.
	compareModels(t, decoded, served)

	// A target that claims RDB 12 but refuses the payloads (as a wrong
	// version guess would): every refused RESTORE is redone natively.
	flushAll(t, dst)
	if _, err := Sync(context.Background(), SyncConfig{RDBFile: file, Writer: WriterConfig{Target: targetOptions(dst), TargetRDBVersion: 12}}, zaptest.NewLogger(t), nil); err != nil {
		t.Fatal(err)
	}
	compareModels(t, decoded, serverModel(t, dst))

	// A field TTL cannot be carried to a server without HPEXPIREAT: the
	// error names the key and the command.
	b = &rb{}
	b.byte(24).str("hfe").u64(4102444800000).len(1).len(1).str("f").str("v")
	os.WriteFile(file, rdbFile(12, b.Bytes()), 0o600)
	_, err = Sync(context.Background(), SyncConfig{RDBFile: file, Writer: WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t), nil)
	if err == nil || !strings.Contains(err.Error(), `"hfe"`) || !strings.Contains(err.Error(), "HPEXPIREAT") {
		t.Errorf("field TTL on an old target: %v", err)
	}
}

// Keys already expired in the RDB and empty collections are not written,
// and stale copies of them on the target are removed.
func TestSyncSkipsExpiredAndEmpty(t *testing.T) {
	b := &rb{}
	b.byte(opExpireTimeMs).u64(1000).byte(0).str("gone").str("v")
	b.byte(2).str("emptyset").len(0)
	b.byte(0).str("kept").str("v")
	file := filepath.Join(t.TempDir(), "x.rdb")
	os.WriteFile(file, rdbFile(9, b.Bytes()), 0o600)
	flushAll(t, dst)
	c := dst.Client(0)
	defer c.Close()
	ctx := context.Background()
	c.Set(ctx, "gone", "stale", 0)
	c.SAdd(ctx, "emptyset", "stale")
	st, err := Sync(ctx, SyncConfig{RDBFile: file, Writer: WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t), nil)
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
