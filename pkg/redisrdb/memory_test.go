package redisrdb_test

import (
	"bytes"
	"io"
	"runtime"
	"strconv"
	"testing"

	"replicator/internal/redistest"
	"replicator/pkg/redisrdb"
)

// hugeSetRDB generates, lazily, an RDB holding one hashtable-encoded set of
// n members, so the test input itself never sits in memory.
type hugeSetRDB struct {
	n, i int
	buf  bytes.Buffer
	done bool
}

func (h *hugeSetRDB) Read(p []byte) (int, error) {
	for h.buf.Len() < len(p) && !h.done {
		switch {
		case h.i == 0:
			b := &redistest.RDB{}
			b.WriteString("REDIS0009")
			b.Byte(2).Str("huge").Len(uint64(h.n))
			h.buf.Write(b.Bytes())
		case h.i > h.n:
			h.buf.Write([]byte{redistest.OpEOF, 0, 0, 0, 0, 0, 0, 0, 0}) // checksum disabled
			h.done = true
			continue
		}
		b := &redistest.RDB{}
		for k := 0; k < 1000 && h.i < h.n; k++ {
			h.i++
			b.Str("member-with-some-padding-" + strconv.Itoa(h.i))
		}
		if h.i == h.n {
			h.i++
		}
		h.buf.Write(b.Bytes())
	}
	if h.buf.Len() == 0 {
		return 0, io.EOF
	}
	return h.buf.Read(p)
}

// TestHugeSetBoundedMemory decodes a 2-million-member set (about 70 MB of
// RDB) and checks the heap never holds it: memory stays at a few batches.
func TestHugeSetBoundedMemory(t *testing.T) {
	const n = 2_000_000
	d := redisrdb.NewDecoder(&hugeSetRDB{n: n}, redisrdb.Options{BatchItems: 512})
	var ms runtime.MemStats
	var peak uint64
	total := 0
	for i := 0; d.Next(); i++ {
		if ev := d.Event(); ev.Kind == redisrdb.KindItems {
			total += len(ev.Items)
		}
		if i%500 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	if total != n {
		t.Fatalf("decoded %d members, want %d", total, n)
	}
	t.Logf("peak heap in use %.1f MiB for a %d-member set", float64(peak)/(1<<20), n)
	if peak > 32<<20 {
		t.Errorf("peak heap %d bytes: the set is being held", peak)
	}
}
