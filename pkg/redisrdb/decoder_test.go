package redisrdb_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc64"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"replicator/internal/redistest"
	"replicator/pkg/redisrdb"
)

func key(typ byte, name string) *redistest.RDB {
	b := &redistest.RDB{}
	b.Byte(typ).Str(name)
	return b
}

// TestDecodeHandBuilt decodes one hand-built RDB per opcode and encoding.
func TestDecodeHandBuilt(t *testing.T) {
	lzfAAA := []byte{0x00, 'a', 0xe0, 0x08, 0x00} // "a" then copy 17 bytes from distance 1 → 18 × 'a'
	cases := []struct {
		name    string
		version int
		body    func(b *redistest.RDB)
		want    string // "db/key" model
		other   string
	}{
		{"string raw", 9, func(b *redistest.RDB) { b.Byte(0).Str("k").Str("hello") }, "0/k string exp=0 [hello] []", ""},
		{"string int8", 9, func(b *redistest.RDB) { b.Byte(0).Str("k").Byte(0xc0, 0xfe) }, "0/k string exp=0 [-2] []", ""},
		{"string int16", 9, func(b *redistest.RDB) { b.Byte(0).Str("k").Byte(0xc1, 0x39, 0x30) }, "0/k string exp=0 [12345] []", ""},
		{"string int32", 9, func(b *redistest.RDB) { b.Byte(0).Str("k").Byte(0xc2, 0x00, 0x00, 0x00, 0x80) }, "0/k string exp=0 [-2147483648] []", ""},
		{"string lzf", 9, func(b *redistest.RDB) {
			b.Byte(0).Str("k").Byte(0xc3).Len(uint64(len(lzfAAA))).Len(18).Byte(lzfAAA...)
		}, "0/k string exp=0 [" + strings.Repeat("a", 18) + "] []", ""},
		{"int-encoded key name", 9, func(b *redistest.RDB) { b.Byte(0).Byte(0xc0, 7).Str("v") }, "0/7 string exp=0 [v] []", ""},
		{"expire ms + selectdb + resizedb", 9, func(b *redistest.RDB) {
			b.Byte(redistest.OpSelectDB).Len(3).Byte(redistest.OpResizeDB).Len(1).Len(1)
			b.Byte(redistest.OpExpireTimeMs).U64(1700000000123).Byte(0).Str("k").Str("v")
		}, "3/k string exp=1700000000123 [v] []", ""},
		{"expire seconds (old)", 3, func(b *redistest.RDB) {
			b.Byte(redistest.OpExpireTime).Byte(binary.LittleEndian.AppendUint32(nil, 1700000000)...).Byte(0).Str("k").Str("v")
		}, "0/k string exp=1700000000000 [v] []", ""},
		{"idle freq slot-info", 12, func(b *redistest.RDB) {
			b.Byte(redistest.OpSlotInfo).Len(5).Len(1).Len(0).Byte(redistest.OpIdle).Len(100).Byte(redistest.OpFreq, 9).Byte(0).Str("k").Str("v")
		}, "0/k string exp=0 [v] []", ""},
		{"aux and function", 10, func(b *redistest.RDB) {
			b.Byte(redistest.OpAux).Str("redis-ver").Str("7.0.0").Byte(redistest.OpFunction2).Str("#!lua name=lib\nredis.register_function('f', function() return 1 end)")
		}, "", "aux redis-ver=7.0.0;function #!lua name=lib\nredis.register_function('f', function() return 1 end)"},
		{"function 7.0-rc with description", 10, func(b *redistest.RDB) {
			b.Byte(redistest.OpFunctionPreGA).Str("lib").Str("LUA").Len(1).Str("a description").Str("redis.register_function('f', function() return 1 end)")
		}, "", "function #!LUA name=lib\nredis.register_function('f', function() return 1 end)"},
		{"function 7.0-rc without description", 10, func(b *redistest.RDB) {
			b.Byte(redistest.OpFunctionPreGA).Str("l2").Str("LUA").Len(0).Str("code")
		}, "", "function #!LUA name=l2\ncode"},
		{"module aux skipped", 10, func(b *redistest.RDB) {
			b.Byte(redistest.OpModuleAux).Len(moduleID("hellotype", 0)).Len(2).Len(2)
			b.Len(1).Len(5).Len(2).Len(6).Len(3).Byte(0, 0, 0, 0).Len(4).U64(0).Len(5).Str("x").Len(0)
			b.Byte(0).Str("k").Str("v")
		}, "0/k string exp=0 [v] []", "moduleaux hellotype"},
		{"list linked", 6, func(b *redistest.RDB) { b.Byte(1).Str("l").Len(3).Str("a").Str("b").Byte(0xc0, 5) }, "0/l list exp=0 [a b 5] []", ""},
		{"list ziplist", 6, func(b *redistest.RDB) {
			b.Byte(10).Str("l").Raw(redistest.Ziplist("a", int64(7), int64(-100), int64(1000), int64(100000), int64(1<<40), strings.Repeat("x", 70)))
		}, "0/l list exp=0 [a 7 -100 1000 100000 1099511627776 " + strings.Repeat("x", 70) + "] []", ""},
		{"list quicklist", 8, func(b *redistest.RDB) {
			b.Byte(14).Str("l").Len(2).Raw(redistest.Ziplist("a", "b")).Raw(redistest.Ziplist(int64(3)))
		}, "0/l list exp=0 [a b 3] []", ""},
		{"list quicklist2 packed+plain", 10, func(b *redistest.RDB) {
			b.Byte(18).Str("l").Len(2).Len(2).Raw(redistest.Listpack("a", int64(-5), int64(300), int64(-70000), int64(1<<33))).Len(1).Str("plain")
		}, "0/l list exp=0 [a -5 300 -70000 8589934592 plain] []", ""},
		{"set hashtable", 6, func(b *redistest.RDB) { b.Byte(2).Str("s").Len(2).Str("y").Str("x") }, "0/s set exp=0 [x y] []", ""},
		{"set intset 16", 6, func(b *redistest.RDB) { b.Byte(11).Str("s").Raw(redistest.Intset(2, -3, 4)) }, "0/s set exp=0 [-3 4] []", ""},
		{"set intset 32", 6, func(b *redistest.RDB) { b.Byte(11).Str("s").Raw(redistest.Intset(4, -70000, 70000)) }, "0/s set exp=0 [-70000 70000] []", ""},
		{"set intset 64", 6, func(b *redistest.RDB) { b.Byte(11).Str("s").Raw(redistest.Intset(8, -(1 << 40))) }, "0/s set exp=0 [-1099511627776] []", ""},
		{"set listpack", 11, func(b *redistest.RDB) { b.Byte(20).Str("s").Raw(redistest.Listpack("b", "a", int64(1))) }, "0/s set exp=0 [1 a b] []", ""},
		{"zset v1", 6, func(b *redistest.RDB) {
			b.Byte(3).Str("z").Len(4).Str("a").Byte(3).Byte([]byte("1.5")...).Str("n").Byte(253).Str("p").Byte(254).Str("m").Byte(255)
		}, "0/z zset exp=0 [a=1.5 m=-Inf n=NaN p=+Inf] []", ""},
		{"zset v2", 8, func(b *redistest.RDB) {
			b.Byte(5).Str("z").Len(1).Str("a").U64(math.Float64bits(-2.25))
		}, "0/z zset exp=0 [a=-2.25] []", ""},
		{"zset ziplist", 6, func(b *redistest.RDB) { b.Byte(12).Str("z").Raw(redistest.Ziplist("a", "1.5", "b", int64(2))) }, "0/z zset exp=0 [a=1.5 b=2] []", ""},
		{"zset listpack", 10, func(b *redistest.RDB) { b.Byte(17).Str("z").Raw(redistest.Listpack("a", "0.25", "b", int64(-3))) }, "0/z zset exp=0 [a=0.25 b=-3] []", ""},
		{"hash hashtable", 6, func(b *redistest.RDB) { b.Byte(4).Str("h").Len(2).Str("f1").Str("v1").Str("f2").Byte(0xc0, 1) }, "0/h hash exp=0 [f1=v1 f2=1] []", ""},
		{"hash zipmap", 3, func(b *redistest.RDB) {
			zm := []byte{2, 2, 'f', '1', 2, 1, 'v', '1', 'X', 2, 'f', '2', 1, 0, 'w', 0xff}
			b.Byte(9).Str("h").Raw(zm)
		}, "0/h hash exp=0 [f1=v1 f2=w] []", ""},
		{"hash ziplist", 6, func(b *redistest.RDB) { b.Byte(13).Str("h").Raw(redistest.Ziplist("f", "v", "n", int64(12))) }, "0/h hash exp=0 [f=v n=12] []", ""},
		{"hash listpack", 10, func(b *redistest.RDB) { b.Byte(16).Str("h").Raw(redistest.Listpack("f", "v", "n", int64(12))) }, "0/h hash exp=0 [f=v n=12] []", ""},
		{"hash metadata (field TTLs)", 12, func(b *redistest.RDB) {
			b.Byte(24).Str("h").U64(1800000000000).Len(2).Len(0).Str("a").Str("1").Len(6).Str("b").Str("2")
		}, "0/h hash exp=0 [a=1 b=2@1800000000005] []", ""},
		{"hash metadata pre-GA", 12, func(b *redistest.RDB) {
			b.Byte(22).Str("h").Len(1).Len(1800000000000).Str("b").Str("2")
		}, "0/h hash exp=0 [b=2@1800000000000] []", ""},
		{"hash listpack ex", 12, func(b *redistest.RDB) {
			b.Byte(25).Str("h").U64(1800000000000).Raw(redistest.Listpack("a", "1", int64(0), "b", "2", int64(1800000000000)))
		}, "0/h hash exp=0 [a=1 b=2@1800000000000] []", ""},
		{"hash listpack ex pre-GA", 12, func(b *redistest.RDB) {
			b.Byte(23).Str("h").Raw(redistest.Listpack("a", "1", int64(1800000000001)))
		}, "0/h hash exp=0 [a=1@1800000000001] []", ""},
		{"stream v1", 9, func(b *redistest.RDB) { redistest.StreamBody(b, 15) }, "0/x stream exp=0 [5-1 f a g b 5-2 f c g d 5-4 h e] [len=3 last=5-4 group g1 last=5-2 consumer alice pel 5-1 alice 2]", ""},
		{"stream v2", 10, func(b *redistest.RDB) { redistest.StreamBody(b, 19) }, "0/x stream exp=0 [5-1 f a g b 5-2 f c g d 5-4 h e] [len=3 last=5-4 group g1 last=5-2 consumer alice pel 5-1 alice 2]", ""},
		{"stream v3", 11, func(b *redistest.RDB) { redistest.StreamBody(b, 21) }, "0/x stream exp=0 [5-1 f a g b 5-2 f c g d 5-4 h e] [len=3 last=5-4 group g1 last=5-2 consumer alice pel 5-1 alice 2]", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &redistest.RDB{}
			c.body(b)
			data := redistest.File(c.version, b.Bytes())
			keys, other, err := redistest.DecodeAll(bytes.NewReader(data))
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

// checkDumpRoundTrip captures each value's raw bytes, wraps them as a DUMP
// payload and checks NewDumpDecoder yields the same model.
func checkDumpRoundTrip(t *testing.T, data []byte, want map[string]*redistest.KeyModel) {
	t.Helper()
	d := redisrdb.NewDecoder(bytes.NewReader(data), redisrdb.Options{CaptureRaw: 1 << 20})
	for d.Next() {
		ev := d.Event()
		if ev.Kind != redisrdb.KindKeyEnd {
			continue
		}
		if ev.Raw == nil {
			t.Fatalf("key %q: raw value not captured", ev.Key)
		}
		dd, err := redisrdb.NewDumpDecoder(ev.Key, redisrdb.EncodeDump(ev.Raw, d.Version()), redisrdb.Options{BatchItems: 2})
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := redistest.ModelOf(dd)
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
		if !redistest.SameValue(g, w) {
			t.Errorf("DUMP round trip of %q: got %v want %v", ev.Key, g, w)
		}
	}
	if d.Err() != nil {
		t.Fatal(d.Err())
	}
}

func TestDecodeErrors(t *testing.T) {
	good := redistest.File(9, (&redistest.RDB{}).Byte(0).Str("k").Str("v").Bytes())
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 1
	noSum := append(append([]byte(nil), good[:len(good)-8]...), make([]byte, 8)...)
	cases := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"checksum", badSum, redisrdb.ErrChecksum, "checksum mismatch"},
		{"truncated", good[:len(good)-12], nil, "unexpected end"},
		{"not rdb", []byte("HELLO0009"), redisrdb.ErrCorrupt, "no REDIS magic"},
		{"too new", redistest.File(13, nil), redisrdb.ErrVersion, "RDB version 13"},
		{"module value", redistest.File(9, (&redistest.RDB{}).Byte(7).Str("mk").Len(uint64(moduleID("ReJSON-RL", 3))).Bytes()), redisrdb.ErrModule, `module type "ReJSON-RL"`},
		{"truncated pre-GA function", redistest.File(10, (&redistest.RDB{}).Byte(redistest.OpFunctionPreGA).Str("lib").Bytes()), nil, "release-candidate"},
		{"unknown type", redistest.File(9, (&redistest.RDB{}).Byte(40).Str("k").Bytes()), redisrdb.ErrCorrupt, "unknown opcode"},
		{"huge declared string", redistest.File(9, (&redistest.RDB{}).Byte(0).Str("k").Len(1<<40).Bytes()), redisrdb.ErrTooLarge, "limit"},
		{"huge lzf", redistest.File(9, (&redistest.RDB{}).Byte(0).Str("k").Byte(0xc3).Len(3).Len(1<<20).Byte(0, 0, 0).Bytes()), redisrdb.ErrCorrupt, "LZF lengths"},
		{"bad ziplist", redistest.File(9, (&redistest.RDB{}).Byte(10).Str("k").Raw([]byte{1, 2, 3}).Bytes()), redisrdb.ErrCorrupt, "ziplist"},
		{"odd hash listpack", redistest.File(10, (&redistest.RDB{}).Byte(16).Str("k").Raw(redistest.Listpack("f")).Bytes()), redisrdb.ErrCorrupt, "odd number"},
		{"bad intset", redistest.File(9, (&redistest.RDB{}).Byte(11).Str("k").Raw(redistest.Intset(3, 1)).Bytes()), redisrdb.ErrCorrupt, "intset"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := redistest.DecodeAll(bytes.NewReader(c.data))
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
	if _, _, err := redistest.DecodeAll(bytes.NewReader(noSum)); err != nil {
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
	if got := redisrdb.CRC64(0, []byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64(123456789) = %x", got)
	}
}

// TestBatching checks a big collection arrives in bounded batches.
func TestBatching(t *testing.T) {
	b := &redistest.RDB{}
	b.Byte(2).Str("s").Len(10000)
	for i := 0; i < 10000; i++ {
		b.Str("m" + strconv.Itoa(i))
	}
	d := redisrdb.NewDecoder(bytes.NewReader(redistest.File(9, b.Bytes())), redisrdb.Options{BatchItems: 100})
	batches, total := 0, 0
	for d.Next() {
		if ev := d.Event(); ev.Kind == redisrdb.KindItems {
			if len(ev.Items) > 100 {
				t.Fatalf("batch of %d items", len(ev.Items))
			}
			batches++
			total += len(ev.Items)
		} else if ev.Kind == redisrdb.KindKeyEnd && ev.Count != 10000 {
			t.Fatalf("KeyEnd count %d", ev.Count)
		}
	}
	if d.Err() != nil || total != 10000 || batches != 100 {
		t.Fatalf("err=%v total=%d batches=%d", d.Err(), total, batches)
	}
}

// TestCRC64Slicing checks the slicing-by-8 loop against the byte-at-a-time
// table algorithm of hash/crc64 (with its inversions undone), for every
// length around the 8-byte steps and split at every point, as the decoder
// and EncodeDump feed it.
func TestCRC64Slicing(t *testing.T) {
	tab := crc64.MakeTable(0x95ac9329ac4bc9b5)
	ref := func(p []byte) uint64 { return ^crc64.Update(^uint64(0), tab, p) }
	buf := make([]byte, 5000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 2047, 2048, 2049, 5000} {
		p := buf[:n]
		want := ref(p)
		if got := redisrdb.CRC64(0, p); got != want {
			t.Fatalf("len %d: crc %x, want %x", n, got, want)
		}
		for cut := 0; cut <= n; cut += 1 + n/13 {
			if got := redisrdb.CRC64(redisrdb.CRC64(0, p[:cut]), p[cut:]); got != want {
				t.Fatalf("len %d split at %d: crc %x, want %x", n, cut, got, want)
			}
		}
	}
}
