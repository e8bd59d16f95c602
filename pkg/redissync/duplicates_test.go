package redissync_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"replicator/internal/redistest"
	"replicator/pkg/redisrdb"
	"replicator/pkg/redissync"
)

// TestDuplicateKeysRefused: the real file with 12 repeated keys, which
// Redis refuses to load, is refused before anything is written.
func TestDuplicateKeysRefused(t *testing.T) {
	file := filepath.Join(fixtureDir, "duplicate-keys.rdb")
	redistest.FlushAll(t, dst)
	ctx := context.Background()
	c := dst.Client(0)
	defer c.Close()
	c.Set(ctx, "sentinel", "untouched", 0)
	_, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if !errors.Is(err, redissync.ErrDuplicateKeys) {
		t.Fatalf("got %v, want ErrDuplicateKeys", err)
	}
	for _, want := range []string{"12 key records", "Nothing was written", "--duplicate-keys last", "duplicate-keys.rdb"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if n := c.DBSize(ctx).Val(); n != 1 || c.Get(ctx, "sentinel").Val() != "untouched" {
		t.Errorf("target changed: %d keys", n)
	}
}

// TestDuplicateKeysLast: with --duplicate-keys last the file loads, the
// last copy of each key wins, and the count is reported.
func TestDuplicateKeysLast(t *testing.T) {
	file := filepath.Join(fixtureDir, "duplicate-keys.rdb")
	redistest.FlushAll(t, dst)
	st, err := redissync.Sync(context.Background(), redissync.SyncConfig{RDBFile: file, DuplicateKeys: redissync.DuplicatesLast,
		Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.DuplicateKeys != 12 {
		t.Errorf("%d duplicates reported, want 12", st.DuplicateKeys)
	}
	// The model of the file keeps the last record of each key.
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	decoded, _, err := redistest.DecodeAll(f)
	if err != nil {
		t.Fatal(err)
	}
	redistest.CompareModels(t, decoded, redistest.ServerModel(t, dst))
}

// TestFindDuplicatesHandBuilt: same name in two databases is no
// duplicate; an expired or empty earlier copy does not count (Redis skips
// those before its check).
func TestFindDuplicatesHandBuilt(t *testing.T) {
	b := &redistest.RDB{}
	b.Byte(redistest.OpSelectDB).Len(0)
	b.Byte(0).Str("a").Str("1")
	b.Byte(redistest.OpExpireTimeMs).U64(1000).Byte(0).Str("b").Str("old")
	b.Byte(2).Str("c").Len(0)
	b.Byte(0).Str("b").Str("2").Byte(0).Str("c").Str("3")
	b.Byte(0).Str("a").Str("again").Byte(0).Str("a").Str("third")
	b.Byte(redistest.OpSelectDB).Len(1)
	b.Byte(0).Str("a").Str("other db")
	file := filepath.Join(t.TempDir(), "d.rdb")
	os.WriteFile(file, redistest.File(9, b.Bytes()), 0o600)
	d, err := redissync.FindDuplicates(func() (io.ReadCloser, error) { return os.Open(file) }, redisrdb.Options{}, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if d.Count != 2 || len(d.Examples) != 1 || d.Examples[0] != `db 0 key "a"` {
		t.Errorf("got %+v, want 2 repeats of db 0 key a", d)
	}
}

// TestSyncFunctionsPreGA: libraries saved by a 7.0 release candidate
// arrive on the target exactly as redis-server serves them after loading
// the same file.
func TestSyncFunctionsPreGA(t *testing.T) {
	file := filepath.Join(fixtureDir, "function-7.0rc.rdb")
	redistest.FlushAll(t, dst)
	c := dst.Client(0)
	defer c.Close()
	ctx := context.Background()
	if err := c.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c := dst.Client(0); c.FunctionFlush(ctx); c.Close() })
	st, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	redistest.LoadInto(t, srv, file)
	t.Cleanup(func() { redistest.LoadInto(t, srv, "") })
	want := redistest.FunctionCodes(t, srv)
	if got := redistest.FunctionCodes(t, dst); st.Functions != 2 || len(want) != 2 || !slices.Equal(got, want) {
		t.Errorf("target serves %q (%d libraries loaded), redis-server from the file %q", got, st.Functions, want)
	}
}
