package redisrdb_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redisrdb"
)

// The ground truth for the decoder is the real redis-server: whatever it
// serves after loading an RDB must be exactly what the decoder produced
// from the same bytes.

// srv is the ground-truth server.
var srv *testenv.Redis

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithRedis(m.Run, &srv, testenv.RedisOptions{}))
}

func TestGroundTruthFixtures(t *testing.T) {
	for _, name := range []string{"encodings.rdb", "hash-zipmap.rdb", "hash-ziplist.rdb", "zset-ziplist.rdb",
		"list-quicklist.rdb", "scriptbackup.rdb", "corrupt_empty_keys.rdb", "rdb-preamble.aof"} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(fixtureDir, name)
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			decoded, _, err := redistest.DecodeAll(f)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			redistest.LoadInto(t, srv, file)
			redistest.CompareModels(t, decoded, redistest.ServerModel(t, srv))
		})
	}
}

// TestGroundTruthServerWritten fills the server with every type in small
// and large encodings, TTLs and several databases, has it SAVE, and checks
// the decoded dump.rdb against what it serves.
func TestGroundTruthServerWritten(t *testing.T) {
	redistest.LoadInto(t, srv, "") // an empty server
	ctx := context.Background()
	redistest.FillEverything(t, srv)
	c := srv.Client(0)
	defer c.Close()
	if err := c.Do(ctx, "FUNCTION", "LOAD", "#!lua name=gtlib\nredis.register_function('gtf', function() return 1 end)").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	served := redistest.ServerModel(t, srv)
	f, err := os.Open(filepath.Join(srv.Dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	decoded, other, err := redistest.DecodeAll(f)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	redistest.CompareModels(t, decoded, served)
	if len(served) < 30 {
		t.Fatalf("only %d keys served: the fill did not work", len(served))
	}
	if !strings.Contains(strings.Join(other, "\n"), "function #!lua name=gtlib") {
		t.Errorf("function library not decoded; other events: %q", other)
	}
	// Every value round-trips through a DUMP payload made by the server.
	for k := range served {
		db, _ := strconv.Atoi(k[:strings.IndexByte(k, '/')])
		name := k[strings.IndexByte(k, '/')+1:]
		cl := srv.Client(db)
		payload, err := cl.Dump(ctx, name).Bytes()
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		d, err := redisrdb.NewDumpDecoder([]byte(name), payload, redisrdb.Options{BatchItems: 5})
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		got, _, err := redistest.ModelOf(d)
		if err != nil {
			t.Fatalf("%s: DUMP payload: %v", k, err)
		}
		g, s := got["0/"+name], served[k]
		if !redistest.SameValue(g, s) {
			t.Errorf("%s: DUMP payload decodes to %v, server has %v", k, g, s.Short())
		}
	}
}

// TestGroundTruthFunctionPreGA: a library saved by a 7.0 release candidate
// decodes to exactly the code redis-server serves after loading the file.
func TestGroundTruthFunctionPreGA(t *testing.T) {
	file := filepath.Join(fixtureDir, "function-7.0rc.rdb")
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, other, err := redistest.DecodeAll(f)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	var decoded []string
	for _, o := range other {
		if code, ok := strings.CutPrefix(o, "function "); ok {
			decoded = append(decoded, code)
		}
	}
	redistest.LoadInto(t, srv, file)
	served := redistest.FunctionCodes(t, srv)
	if len(served) != 2 {
		t.Fatalf("redis-server serves %d libraries from the fixture, want 2 (lib1, lib2)", len(served))
	}
	slices.Sort(decoded)
	if !slices.Equal(decoded, served) {
		t.Errorf("decoded libraries\n%q\nredis-server serves\n%q", decoded, served)
	}
}

// TestGroundTruthRefusedFixtures: the fixtures the installed redis-server
// (7.0) refuses to load, with the reason it logs. The decoder reads each
// (the sync refuses them, see redissync's tests) or, for the corrupt one,
// fails cleanly (TestCorruptFixtures).
func TestGroundTruthRefusedFixtures(t *testing.T) {
	for name, why := range map[string]string{
		"duplicate-keys.rdb":  "Duplicated key",
		"hash_with_hfe.rdb":   "RDB format version 12",
		"corrupt_ziplist.rdb": "integrity check failed",
	} {
		t.Run(name, func(t *testing.T) {
			if err := srv.Stop(testenv.Fast); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(fixtureDir, name))
			if err != nil {
				t.Fatal(err)
			}
			dump := filepath.Join(srv.Dir, "dump.rdb")
			if err := os.WriteFile(dump, b, 0o644); err != nil {
				t.Fatal(err)
			}
			logFile := filepath.Join(srv.Dir, "server.log")
			os.Truncate(logFile, 0)
			err = srv.Start()
			os.Remove(dump)
			if err == nil {
				t.Errorf("redis-server loaded %s; the fixture's note says it refuses it", name)
				return
			}
			if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), why) {
				t.Errorf("redis-server refused %s, but its log does not say %q:\n%v", name, why, err)
			}
			if err := srv.Start(); err != nil {
				t.Fatalf("restart on an empty dump: %v", err)
			}
		})
	}
}
