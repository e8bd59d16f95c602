package redissync_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"replicator/internal/redistest"
	"replicator/pkg/redissync"
)

const farFuture = 4102444800000 // 2100-01-01, Unix ms

// fixtureDir holds the real RDB files written by other projects' Redis.
const fixtureDir = "../../../shared/fixtures/redis-rdb"

// hfeFile writes an RDB 12 file: 50 strings, a hash whose fields all
// expired ("allgone"), a hash with an expired, a live and a plain field
// ("hfe"), then 10 more strings.
func hfeFile(t *testing.T) string {
	t.Helper()
	b := &redistest.RDB{}
	b.Byte(redistest.OpSelectDB).Len(0)
	for i := range 50 {
		b.Byte(0).Str(fmt.Sprintf("before:%d", i)).Str("v")
	}
	// Type 24: minimum expiry, count, then per field (ttl - min + 1 or 0).
	b.Byte(24).Str("allgone").U64(1000).Len(2).Len(1).Str("a").Str("1").Len(5).Str("b").Str("2")
	b.Byte(24).Str("hfe").U64(1000).Len(3).Len(1).Str("old").Str("x").Len(farFuture - 1000 + 1).Str("live").Str("y").Len(0).Str("plain").Str("z")
	for i := range 10 {
		b.Byte(0).Str(fmt.Sprintf("after:%d", i)).Str("v")
	}
	file := filepath.Join(t.TempDir(), "hfe.rdb")
	if err := os.WriteFile(file, redistest.File(12, b.Bytes()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestHashFieldTTLRefuse: into the 7.0 target (no HPEXPIREAT) the default
// stops before the hash with a live field TTL is written, and says how
// many keys are already there and how to start over.
func TestHashFieldTTLRefuse(t *testing.T) {
	file := hfeFile(t)
	redistest.FlushAll(t, dst)
	ctx := context.Background()
	c := dst.Client(0)
	defer c.Close()
	c.HSet(ctx, "allgone", "stale", "1")
	_, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	var fe *redissync.FieldTTLError
	if !errors.As(err, &fe) || fe.Key != "hfe" {
		t.Fatalf("got %v, want a FieldTTLError for key hfe", err)
	}
	for _, want := range []string{`"hfe"`, "--hash-field-ttl drop", "50 keys were already written", "--flush-target"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if n := c.Exists(ctx, "hfe", "allgone").Val(); n != 0 {
		t.Errorf("%d of the hashes hfe and allgone exist on the target; want neither", n)
	}
	if n := c.DBSize(ctx).Val(); n != 50 {
		t.Errorf("target holds %d keys, want the 50 before the refused one", n)
	}
}

// TestHashFieldTTLDrop: with drop, the live field is written without its
// TTL and reported; expired fields, and a hash of expired fields only,
// never appear.
func TestHashFieldTTLDrop(t *testing.T) {
	file := hfeFile(t)
	redistest.FlushAll(t, dst)
	ctx := context.Background()
	c := dst.Client(0)
	defer c.Close()
	st, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file,
		Writer: redissync.WriterConfig{Target: targetOptions(dst), HashFieldTTL: redissync.FieldTTLDrop}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	got := c.HGetAll(ctx, "hfe").Val()
	if len(got) != 2 || got["live"] != "y" || got["plain"] != "z" {
		t.Errorf("hfe on the target = %v, want live and plain only", got)
	}
	if n := c.Exists(ctx, "allgone").Val(); n != 0 {
		t.Error("a hash whose fields had all expired was written")
	}
	if n := c.DBSize(ctx).Val(); n != 61 {
		t.Errorf("target holds %d keys, want 61", n)
	}
	if st.DroppedFieldTTLs != 1 || st.ExpiredFields != 3 || st.Keys != 61 {
		t.Errorf("stats: dropped TTLs %d (want 1), expired fields %d (want 3), keys %d (want 61)", st.DroppedFieldTTLs, st.ExpiredFields, st.Keys)
	}
}

// TestHashFieldTTLFixture: the real 7.4 file; Redis 7.0 refuses it whole,
// we refuse its one key, or with drop write all eight fields.
func TestHashFieldTTLFixture(t *testing.T) {
	file := filepath.Join(fixtureDir, "hash_with_hfe.rdb")
	redistest.FlushAll(t, dst)
	ctx := context.Background()
	c := dst.Client(0)
	defer c.Close()
	_, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), `"hash-hfe"`) || strings.Contains(err.Error(), "already written") {
		t.Errorf("refuse: %v; want the key named and nothing said written", err)
	}
	if n := c.DBSize(ctx).Val(); n != 0 {
		t.Errorf("refuse: %d keys written", n)
	}
	st, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file,
		Writer: redissync.WriterConfig{Target: targetOptions(dst), HashFieldTTL: redissync.FieldTTLDrop}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.HLen(ctx, "hash-hfe").Val(); n != 8 || st.DroppedFieldTTLs != 3 {
		t.Errorf("drop: %d fields written (want 8), %d TTLs reported dropped (want 3)", n, st.DroppedFieldTTLs)
	}
}

// watchLen polls HLEN of key on the target until stop is closed and
// returns every length it saw other than 0 and full.
func watchLen(t *testing.T, key string, full int64, stop <-chan struct{}) func() []int64 {
	c := dst.Client(0)
	var mu sync.Mutex
	var bad []int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := c.HLen(context.Background(), key).Result()
			if err == nil && n != 0 && n != full {
				mu.Lock()
				bad = append(bad, n)
				mu.Unlock()
			}
		}
	}()
	return func() []int64 { <-done; mu.Lock(); defer mu.Unlock(); return bad }
}

// bigHash writes an RDB holding one hash of n fields of 100 bytes; with
// lastTTL its last field has a TTL the 7.0 target cannot keep.
func bigHash(t *testing.T, n int, lastTTL bool) string {
	b := &redistest.RDB{}
	val := strings.Repeat("v", 100)
	if lastTTL {
		b.Byte(24).Str("big").U64(farFuture).Len(uint64(n))
		for i := range n {
			ttl := uint64(0)
			if i == n-1 {
				ttl = 1
			}
			b.Len(ttl).Str(fmt.Sprintf("f%06d", i)).Str(val)
		}
	} else {
		b.Byte(4).Str("big").Len(uint64(n))
		for i := range n {
			b.Str(fmt.Sprintf("f%06d", i)).Str(val)
		}
	}
	file := filepath.Join(t.TempDir(), "big.rdb")
	if err := os.WriteFile(file, redistest.File(12, b.Bytes()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestNativeKeyAtomic: a hash written natively in several round trips
// (about 4 MB of HSET) is never seen half-written by a reader, and a key
// refused at its last field leaves nothing.
func TestNativeKeyAtomic(t *testing.T) {
	const n = 40000
	ctx := context.Background()
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%v", refuse), func(t *testing.T) {
			redistest.FlushAll(t, dst)
			file := bigHash(t, n, refuse)
			stop := make(chan struct{})
			seen := watchLen(t, "big", n, stop)
			_, err := redissync.Sync(ctx, redissync.SyncConfig{RDBFile: file, BigKeyBytes: 1024,
				Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
			close(stop)
			if bad := seen(); len(bad) > 0 {
				t.Errorf("a reader saw the hash with %d fields (of %d) while it was written", bad[0], n)
			}
			c := dst.Client(0)
			defer c.Close()
			got := c.HLen(ctx, "big").Val()
			if refuse {
				var fe *redissync.FieldTTLError
				if !errors.As(err, &fe) {
					t.Fatalf("got %v, want a FieldTTLError", err)
				}
				if got != 0 {
					t.Errorf("refused key has %d fields on the target", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != n {
				t.Errorf("hash has %d fields, want %d", got, n)
			}
		})
	}
}
