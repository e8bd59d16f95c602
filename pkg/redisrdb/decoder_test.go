package redisrdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

func key(typ byte, name string) *rb {
	b := &rb{}
	b.byte(typ).str(name)
	return b
}

// TestDecodeHandBuilt decodes one hand-built RDB per opcode and encoding.
func TestDecodeHandBuilt(t *testing.T) {
	lzfAAA := []byte{0x00, 'a', 0xe0, 0x08, 0x00} // "a" then copy 17 bytes from distance 1 → 18 × 'a'
	cases := []struct {
		name    string
		version int
		body    func(b *rb)
		want    string // "db/key" model
		other   string
	}{
		{"string raw", 9, func(b *rb) { b.byte(0).str("k").str("hello") }, "0/k string exp=0 [hello] []", ""},
		{"string int8", 9, func(b *rb) { b.byte(0).str("k").byte(0xc0, 0xfe) }, "0/k string exp=0 [-2] []", ""},
		{"string int16", 9, func(b *rb) { b.byte(0).str("k").byte(0xc1, 0x39, 0x30) }, "0/k string exp=0 [12345] []", ""},
		{"string int32", 9, func(b *rb) { b.byte(0).str("k").byte(0xc2, 0x00, 0x00, 0x00, 0x80) }, "0/k string exp=0 [-2147483648] []", ""},
		{"string lzf", 9, func(b *rb) {
			b.byte(0).str("k").byte(0xc3).len(uint64(len(lzfAAA))).len(18).byte(lzfAAA...)
		}, "0/k string exp=0 [" + strings.Repeat("a", 18) + "] []", ""},
		{"int-encoded key name", 9, func(b *rb) { b.byte(0).byte(0xc0, 7).str("v") }, "0/7 string exp=0 [v] []", ""},
		{"expire ms + selectdb + resizedb", 9, func(b *rb) {
			b.byte(opSelectDB).len(3).byte(opResizeDB).len(1).len(1)
			b.byte(opExpireTimeMs).u64(1700000000123).byte(0).str("k").str("v")
		}, "3/k string exp=1700000000123 [v] []", ""},
		{"expire seconds (old)", 3, func(b *rb) {
			b.byte(opExpireTime).byte(binary.LittleEndian.AppendUint32(nil, 1700000000)...).byte(0).str("k").str("v")
		}, "0/k string exp=1700000000000 [v] []", ""},
		{"idle freq slot-info", 12, func(b *rb) {
			b.byte(opSlotInfo).len(5).len(1).len(0).byte(opIdle).len(100).byte(opFreq, 9).byte(0).str("k").str("v")
		}, "0/k string exp=0 [v] []", ""},
		{"aux and function", 10, func(b *rb) {
			b.byte(opAux).str("redis-ver").str("7.0.0").byte(opFunction2).str("#!lua name=lib\nredis.register_function('f', function() return 1 end)")
		}, "", "aux redis-ver=7.0.0;function #!lua name=lib\nredis.register_function('f', function() return 1 end)"},
		{"module aux skipped", 10, func(b *rb) {
			b.byte(opModuleAux).len(moduleID("hellotype", 0)).len(2).len(2)
			b.len(1).len(5).len(2).len(6).len(3).byte(0, 0, 0, 0).len(4).u64(0).len(5).str("x").len(0)
			b.byte(0).str("k").str("v")
		}, "0/k string exp=0 [v] []", "moduleaux hellotype"},
		{"list linked", 6, func(b *rb) { b.byte(1).str("l").len(3).str("a").str("b").byte(0xc0, 5) }, "0/l list exp=0 [a b 5] []", ""},
		{"list ziplist", 6, func(b *rb) {
			b.byte(10).str("l").raw(ziplist("a", int64(7), int64(-100), int64(1000), int64(100000), int64(1<<40), strings.Repeat("x", 70)))
		}, "0/l list exp=0 [a 7 -100 1000 100000 1099511627776 " + strings.Repeat("x", 70) + "] []", ""},
		{"list quicklist", 8, func(b *rb) {
			b.byte(14).str("l").len(2).raw(ziplist("a", "b")).raw(ziplist(int64(3)))
		}, "0/l list exp=0 [a b 3] []", ""},
		{"list quicklist2 packed+plain", 10, func(b *rb) {
			b.byte(18).str("l").len(2).len(2).raw(listpack("a", int64(-5), int64(300), int64(-70000), int64(1<<33))).len(1).str("plain")
		}, "0/l list exp=0 [a -5 300 -70000 8589934592 plain] []", ""},
		{"set hashtable", 6, func(b *rb) { b.byte(2).str("s").len(2).str("y").str("x") }, "0/s set exp=0 [x y] []", ""},
		{"set intset 16", 6, func(b *rb) { b.byte(11).str("s").raw(intset(2, -3, 4)) }, "0/s set exp=0 [-3 4] []", ""},
		{"set intset 32", 6, func(b *rb) { b.byte(11).str("s").raw(intset(4, -70000, 70000)) }, "0/s set exp=0 [-70000 70000] []", ""},
		{"set intset 64", 6, func(b *rb) { b.byte(11).str("s").raw(intset(8, -(1 << 40))) }, "0/s set exp=0 [-1099511627776] []", ""},
		{"set listpack", 11, func(b *rb) { b.byte(20).str("s").raw(listpack("b", "a", int64(1))) }, "0/s set exp=0 [1 a b] []", ""},
		{"zset v1", 6, func(b *rb) {
			b.byte(3).str("z").len(4).str("a").byte(3).byte([]byte("1.5")...).str("n").byte(253).str("p").byte(254).str("m").byte(255)
		}, "0/z zset exp=0 [a=1.5 m=-Inf n=NaN p=+Inf] []", ""},
		{"zset v2", 8, func(b *rb) {
			b.byte(5).str("z").len(1).str("a").u64(math.Float64bits(-2.25))
		}, "0/z zset exp=0 [a=-2.25] []", ""},
		{"zset ziplist", 6, func(b *rb) { b.byte(12).str("z").raw(ziplist("a", "1.5", "b", int64(2))) }, "0/z zset exp=0 [a=1.5 b=2] []", ""},
		{"zset listpack", 10, func(b *rb) { b.byte(17).str("z").raw(listpack("a", "0.25", "b", int64(-3))) }, "0/z zset exp=0 [a=0.25 b=-3] []", ""},
		{"hash hashtable", 6, func(b *rb) { b.byte(4).str("h").len(2).str("f1").str("v1").str("f2").byte(0xc0, 1) }, "0/h hash exp=0 [f1=v1 f2=1] []", ""},
		{"hash zipmap", 3, func(b *rb) {
			zm := []byte{2, 2, 'f', '1', 2, 1, 'v', '1', 'X', 2, 'f', '2', 1, 0, 'w', 0xff}
			b.byte(9).str("h").raw(zm)
		}, "0/h hash exp=0 [f1=v1 f2=w] []", ""},
		{"hash ziplist", 6, func(b *rb) { b.byte(13).str("h").raw(ziplist("f", "v", "n", int64(12))) }, "0/h hash exp=0 [f=v n=12] []", ""},
		{"hash listpack", 10, func(b *rb) { b.byte(16).str("h").raw(listpack("f", "v", "n", int64(12))) }, "0/h hash exp=0 [f=v n=12] []", ""},
		{"hash metadata (field TTLs)", 12, func(b *rb) {
			b.byte(24).str("h").u64(1800000000000).len(2).len(0).str("a").str("1").len(6).str("b").str("2")
		}, "0/h hash exp=0 [a=1 b=2@1800000000005] []", ""},
		{"hash metadata pre-GA", 12, func(b *rb) {
			b.byte(22).str("h").len(1).len(1800000000000).str("b").str("2")
		}, "0/h hash exp=0 [b=2@1800000000000] []", ""},
		{"hash listpack ex", 12, func(b *rb) {
			b.byte(25).str("h").u64(1800000000000).raw(listpack("a", "1", int64(0), "b", "2", int64(1800000000000)))
		}, "0/h hash exp=0 [a=1 b=2@1800000000000] []", ""},
		{"hash listpack ex pre-GA", 12, func(b *rb) {
			b.byte(23).str("h").raw(listpack("a", "1", int64(1800000000001)))
		}, "0/h hash exp=0 [a=1@1800000000001] []", ""},
		{"stream v1", 9, func(b *rb) { streamBody(b, 15) }, "0/x stream exp=0 [5-1 f a g b 5-2 f c g d 5-4 h e] [len=3 last=5-4 group g1 last=5-2 consumer alice pel 5-1 alice 2]", ""},
		{"stream v2", 10, func(b *rb) { streamBody(b, 19) }, "0/x stream exp=0 [5-1 f a g b 5-2 f c g d 5-4 h e] [len=3 last=5-4 group g1 last=5-2 consumer alice pel 5-1 alice 2]", ""},
		{"stream v3", 11, func(b *rb) { streamBody(b, 21) }, "0/x stream exp=0 [5-1 f a g b 5-2 f c g d 5-4 h e] [len=3 last=5-4 group g1 last=5-2 consumer alice pel 5-1 alice 2]", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &rb{}
			c.body(b)
			data := rdbFile(c.version, b.Bytes())
			keys, other, err := decodeAll(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			var got []string
			for k, v := range keys {
				got = append(got, k+" "+v.String())
			}
			if want := c.want; (want == "" && len(got) != 0) || (want != "" && (len(got) != 1 || got[0] != want)) {
				t.Errorf("got  %q\nwant %q", got, want)
			}
			if o := strings.Join(other, ";"); o != c.other {
				t.Errorf("other events: got %q want %q", o, c.other)
			}
			// The same value as a DUMP payload decodes to the same thing.
			if c.want != "" {
				checkDumpRoundTrip(t, data, keys)
			}
		})
	}
}

// streamBody writes a stream with one node of three live entries (one
// with its own fields, two using the master fields) and one deleted entry,
// one group with one consumer owning one pending entry.
func streamBody(b *rb, typ byte) {
	lp := listpack(
		int64(3), int64(1), int64(2), "f", "g", int64(0), // master: count, deleted, 2 fields, terminator
		int64(2), int64(0), int64(1), "a", "b", int64(3), // SAMEFIELDS, id 5-1
		int64(2), int64(0), int64(2), "c", "d", int64(3), // SAMEFIELDS, id 5-2
		int64(3), int64(0), int64(3), "z", "z", int64(3), // deleted + SAMEFIELDS, id 5-3
		int64(0), int64(0), int64(4), int64(1), "h", "e", int64(5), // own fields, id 5-4
	)
	b.byte(typ).str("x").len(1).raw(streamID(5, 0)).raw(lp)
	b.len(3).len(5).len(4) // length, last id
	if typ >= 19 {
		b.len(5).len(1).len(5).len(3).len(4) // first id, max deleted, entries added
	}
	b.len(1).str("g1").len(5).len(2) // one group, last delivered 5-2
	if typ >= 19 {
		b.len(2) // entries read
	}
	b.len(1).byte(streamID(5, 1)...).u64(1700000000000).len(2) // group PEL
	b.len(1).str("alice").u64(1700000000001)                   // one consumer
	if typ >= 21 {
		b.u64(1700000000002)
	}
	b.len(1).byte(streamID(5, 1)...)
}

// checkDumpRoundTrip captures each value's raw bytes, wraps them as a DUMP
// payload and checks NewDumpDecoder yields the same model.
func checkDumpRoundTrip(t *testing.T, data []byte, want map[string]*keyModel) {
	t.Helper()
	d := NewDecoder(bytes.NewReader(data), Options{CaptureRaw: 1 << 20})
	for d.Next() {
		ev := d.Event()
		if ev.Kind != KindKeyEnd {
			continue
		}
		if ev.Raw == nil {
			t.Fatalf("key %q: raw value not captured", ev.Key)
		}
		dd, err := NewDumpDecoder(ev.Key, EncodeDump(ev.Raw, d.Version()), Options{BatchItems: 2})
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := modelOf(dd)
		if err != nil {
			t.Fatalf("dump decode: %v", err)
		}
		w := want["0/"+string(ev.Key)]
		if w == nil {
			for k, v := range want {
				if strings.HasSuffix(k, "/"+string(ev.Key)) {
					w = v
				}
			}
		}
		g := got["0/"+string(ev.Key)]
		if g == nil || w == nil || g.typ != w.typ || strings.Join(g.members, "|") != strings.Join(w.members, "|") || strings.Join(g.extra, "|") != strings.Join(w.extra, "|") {
			t.Errorf("DUMP round trip of %q: got %v want %v", ev.Key, g, w)
		}
	}
	if d.Err() != nil {
		t.Fatal(d.Err())
	}
}

func TestDecodeErrors(t *testing.T) {
	good := rdbFile(9, (&rb{}).byte(0).str("k").str("v").Bytes())
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 1
	noSum := append(append([]byte(nil), good[:len(good)-8]...), make([]byte, 8)...)
	cases := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"checksum", badSum, ErrChecksum, "checksum mismatch"},
		{"truncated", good[:len(good)-12], nil, "unexpected end"},
		{"not rdb", []byte("HELLO0009"), ErrCorrupt, "no REDIS magic"},
		{"too new", rdbFile(13, nil), ErrVersion, "RDB version 13"},
		{"module value", rdbFile(9, (&rb{}).byte(7).str("mk").len(uint64(moduleID("ReJSON-RL", 3))).Bytes()), ErrModule, `module type "ReJSON-RL"`},
		{"pre-GA function", rdbFile(10, (&rb{}).byte(opFunctionPreGA).Bytes()), ErrUnsupported, "release-candidate"},
		{"unknown type", rdbFile(9, (&rb{}).byte(40).str("k").Bytes()), ErrCorrupt, "unknown opcode"},
		{"huge declared string", rdbFile(9, (&rb{}).byte(0).str("k").len(1<<40).Bytes()), ErrTooLarge, "limit"},
		{"huge lzf", rdbFile(9, (&rb{}).byte(0).str("k").byte(0xc3).len(3).len(1<<20).byte(0, 0, 0).Bytes()), ErrCorrupt, "LZF lengths"},
		{"bad ziplist", rdbFile(9, (&rb{}).byte(10).str("k").raw([]byte{1, 2, 3}).Bytes()), ErrCorrupt, "ziplist"},
		{"odd hash listpack", rdbFile(10, (&rb{}).byte(16).str("k").raw(listpack("f")).Bytes()), ErrCorrupt, "odd number"},
		{"bad intset", rdbFile(9, (&rb{}).byte(11).str("k").raw(intset(3, 1)).Bytes()), ErrCorrupt, "intset"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := decodeAll(bytes.NewReader(c.data))
			if err == nil {
				t.Fatal("no error")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v is not %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %q does not mention %q", err, c.text)
			}
		})
	}
	// A zero checksum means "not computed" (rdbchecksum no) and is accepted.
	if _, _, err := decodeAll(bytes.NewReader(noSum)); err != nil {
		t.Errorf("zero checksum: %v", err)
	}
}

func moduleID(name string, ver int) uint64 {
	const charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var id uint64
	for i := 0; i < 9; i++ {
		id = id<<6 | uint64(strings.IndexByte(charset, name[i]))
	}
	return id<<10 | uint64(ver)
}

func TestCRC64(t *testing.T) {
	// The check value from Redis' src/crc64.c self-test.
	if got := CRC64(0, []byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64(123456789) = %x", got)
	}
}

// TestBatching checks a big collection arrives in bounded batches.
func TestBatching(t *testing.T) {
	b := &rb{}
	b.byte(2).str("s").len(10000)
	for i := 0; i < 10000; i++ {
		b.str("m" + itoa(i))
	}
	d := NewDecoder(bytes.NewReader(rdbFile(9, b.Bytes())), Options{BatchItems: 100})
	batches, total := 0, 0
	for d.Next() {
		if ev := d.Event(); ev.Kind == KindItems {
			if len(ev.Items) > 100 {
				t.Fatalf("batch of %d items", len(ev.Items))
			}
			batches++
			total += len(ev.Items)
		} else if ev.Kind == KindKeyEnd && ev.Count != 10000 {
			t.Fatalf("KeyEnd count %d", ev.Count)
		}
	}
	if d.Err() != nil || total != 10000 || batches != 100 {
		t.Fatalf("err=%v total=%d batches=%d", d.Err(), total, batches)
	}
}
