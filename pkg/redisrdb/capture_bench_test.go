package redisrdb_test

import (
	"bytes"
	"fmt"
	"testing"

	"replicator/internal/redistest"
	"replicator/pkg/redisrdb"
)

// BenchmarkDecodeStrings decodes an RDB of 10,000 small strings with raw
// capture on, as a sync does, with string capture kept (capture) or
// turned off as a SET-writing target does (nocapture).
func BenchmarkDecodeStrings(b *testing.B) {
	r := &redistest.RDB{}
	r.Byte(redistest.OpSelectDB).Len(0)
	for i := range 10000 {
		r.Byte(0).Str(fmt.Sprintf("key:%08d", i)).Str(fmt.Sprintf("value-%d-of-a-small-string", i))
	}
	data := redistest.File(11, r.Bytes())
	for _, strings := range []bool{true, false} {
		name := map[bool]string{true: "capture", false: "nocapture"}[strings]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for range b.N {
				d := redisrdb.NewDecoder(bytes.NewReader(data), redisrdb.Options{CaptureRaw: 1 << 20})
				d.CaptureStrings(strings)
				n := 0
				for d.Next() {
					if ev := d.Event(); ev.Kind == redisrdb.KindKeyEnd {
						if (ev.Raw != nil) != strings {
							b.Fatalf("key %d: raw %v with string capture %v", n, ev.Raw != nil, strings)
						}
						n++
					}
				}
				if d.Err() != nil || n != 10000 {
					b.Fatalf("%d keys, %v", n, d.Err())
				}
			}
		})
	}
}

// TestCaptureStringsOff: with string capture turned off a string's KeyEnd
// carries no raw bytes, while the other values are still captured whole.
func TestCaptureStringsOff(t *testing.T) {
	r := &redistest.RDB{}
	r.Byte(redistest.OpSelectDB).Len(0)
	r.Byte(0).Str("s").Str("value")
	r.Byte(2).Str("set").Len(2).Str("a").Str("b")
	r.Byte(0).Str("s2").Str("value2")
	d := redisrdb.NewDecoder(bytes.NewReader(redistest.File(11, r.Bytes())), redisrdb.Options{CaptureRaw: 1 << 20})
	d.CaptureStrings(false)
	raw := map[string]int{}
	var key string
	for d.Next() {
		switch ev := d.Event(); ev.Kind {
		case redisrdb.KindKeyStart:
			key = string(ev.Key)
		case redisrdb.KindKeyEnd:
			raw[key] = len(ev.Raw)
		}
	}
	if d.Err() != nil {
		t.Fatal(d.Err())
	}
	// The set: type byte, length, two strings of length and one byte.
	if raw["s"] != 0 || raw["s2"] != 0 || raw["set"] != 6 {
		t.Errorf("raw bytes by key %v; want none for the strings and 6 for the set", raw)
	}
}
