package redisrdb_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"replicator/internal/redistest"
	"replicator/pkg/redisrdb"
)

const fixtureDir = "../../../shared/fixtures/redis-rdb"

func fixtureFiles(t testing.TB) []string {
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*.rdb"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no RDB fixtures in %s (%v)", fixtureDir, err)
	}
	return append(files, filepath.Join(fixtureDir, "rdb-preamble.aof"))
}

func corruptPayloads(t testing.TB) [][]byte {
	f, err := os.Open(filepath.Join(fixtureDir, "corrupt-dump-payloads.hex"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatalf("payload %q: %v", line, err)
		}
		out = append(out, b)
	}
	if len(out) != 46 {
		t.Fatalf("%d payloads, want 46", len(out))
	}
	return out
}

// fuzzOptions keep allocations small so the fuzzer finds unbounded ones.
var fuzzOptions = redisrdb.Options{MaxStringBytes: 1 << 20, BatchItems: 64, CaptureRaw: 1 << 16}

// drain decodes everything and bounds the work: every event must consume
// input or carry items, so a decoder that loops is caught.
func drain(t testing.TB, d *redisrdb.Decoder, inputLen int) error {
	timer := time.AfterFunc(5*time.Second, func() { panic("decoder still running after 5s") })
	defer timer.Stop()
	events := 0
	for d.Next() {
		events++
		if events > 4*inputLen+16 {
			t.Fatalf("%d events from %d bytes: the decoder loops", events, inputLen)
		}
	}
	return d.Err()
}

func FuzzDecode(f *testing.F) {
	for _, p := range fixtureFiles(f) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// The 46 DUMP payloads again, each as the only key of an RDB file.
	for _, p := range corruptPayloads(f) {
		body := append([]byte{p[0]}, append([]byte{1, 'k'}, p[1:len(p)-10]...)...)
		f.Add(redistest.File(11, body))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		drain(t, redisrdb.NewDecoder(bytes.NewReader(data), fuzzOptions), len(data))
	})
}

func FuzzDumpPayload(f *testing.F) {
	for _, p := range corruptPayloads(f) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Fix up the checksum so the fuzzer gets past it into the value.
		if len(data) >= 11 {
			fixed := redisrdb.EncodeDump(data[:len(data)-10], int(data[len(data)-10])%13)
			d, err := redisrdb.NewDumpDecoder([]byte("k"), fixed, fuzzOptions)
			if err == nil {
				drain(t, d, len(data))
			}
		}
		if d, err := redisrdb.NewDumpDecoder([]byte("k"), data, fuzzOptions); err == nil {
			drain(t, d, len(data))
		}
	})
}

// TestCorruptFixtures: the corrupt files fail cleanly; the others decode.
func TestCorruptFixtures(t *testing.T) {
	for _, p := range fixtureFiles(t) {
		b, _ := os.ReadFile(p)
		err := drain(t, redisrdb.NewDecoder(bytes.NewReader(b), redisrdb.Options{}), len(b))
		switch filepath.Base(p) {
		case "corrupt_ziplist.rdb":
			if err == nil {
				t.Errorf("%s: decoded without error", p)
			}
		default:
			if err != nil {
				t.Errorf("%s: %v", p, err)
			}
		}
	}
}

// TestCorruptPayloads runs the 46 payloads of Redis' corrupt-dump test:
// each gives an error or a value, never a panic or a hang.
func TestCorruptPayloads(t *testing.T) {
	ok, bad := 0, 0
	for i, p := range corruptPayloads(t) {
		d, err := redisrdb.NewDumpDecoder([]byte("k"), p, redisrdb.Options{MaxStringBytes: 1 << 20})
		if err == nil {
			err = drain(t, d, len(p))
		}
		if err != nil {
			bad++
			if !strings.Contains(err.Error(), `"k"`) {
				t.Errorf("payload %d: error does not name the key: %v", i, err)
			}
		} else {
			ok++
		}
	}
	t.Logf("%d payloads decoded, %d rejected", ok, bad)
	if bad == 0 {
		t.Error("every corrupt payload was accepted")
	}
}
