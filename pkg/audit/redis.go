package audit

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redisconn"
)

// RedisReport is the inventory of a source Redis.
type RedisReport struct {
	Version        string `json:"version"`
	UsedMemory     int64  `json:"used_memory_bytes"`
	MaxMemory      int64  `json:"maxmemory_bytes"`
	EvictionPolicy string `json:"maxmemory_policy,omitempty"`
	// Persistence is how the server keeps its data: RDB snapshots, AOF,
	// both or none, from INFO persistence and CONFIG where allowed.
	Persistence string         `json:"persistence"`
	Keyspace    []RedisDB      `json:"keyspace"`
	SampledKeys int            `json:"sampled_keys"`
	TypeMix     map[string]int `json:"type_mix"`
	BiggestKeys []RedisKey     `json:"biggest_keys"`
	// ReplicationCommands says whether PSYNC/SYNC exist on the server.
	// Not tried: a PSYNC makes the source fork for a full RDB, which the
	// audit must never cause.
	ReplicationCommands bool   `json:"psync_available"`
	CaptureNote         string `json:"capture_note"`
}

// RedisDB is one database of the keyspace.
type RedisDB struct {
	DB      int   `json:"db"`
	Keys    int64 `json:"keys"`
	Expires int64 `json:"expires"`
}

// RedisKey is one sampled key and its memory use.
type RedisKey struct {
	DB    int    `json:"db"`
	Key   string `json:"key"`
	Type  string `json:"type"`
	Bytes int64  `json:"bytes"`
}

// Redis audits the server behind opts (its DB field is ignored: every
// database is read). It samples up to sample keys per database with SCAN.
func Redis(ctx context.Context, opts *redis.Options, sample int) (*RedisReport, error) {
	if sample <= 0 {
		sample = 10000
	}
	o := *opts
	o.DB = 0
	c := redis.NewClient(&o)
	defer c.Close()
	info, err := c.Info(ctx, "server", "memory", "keyspace", "persistence").Result()
	if err != nil {
		return nil, redisconn.Explain("source", opts, err)
	}
	f := infoFields(info)
	r := &RedisReport{Version: f["redis_version"], EvictionPolicy: f["maxmemory_policy"], TypeMix: map[string]int{}}
	r.UsedMemory, _ = strconv.ParseInt(f["used_memory"], 10, 64)
	r.MaxMemory, _ = strconv.ParseInt(f["maxmemory"], 10, 64)
	r.Persistence = persistence(ctx, c, f)
	for k, v := range f {
		if !strings.HasPrefix(k, "db") {
			continue
		}
		db, err := strconv.Atoi(k[2:])
		if err != nil {
			continue
		}
		d := RedisDB{DB: db}
		for _, part := range strings.Split(v, ",") {
			kv := strings.SplitN(part, "=", 2)
			if len(kv) != 2 {
				continue
			}
			n, _ := strconv.ParseInt(kv[1], 10, 64)
			switch kv[0] {
			case "keys":
				d.Keys = n
			case "expires":
				d.Expires = n
			}
		}
		r.Keyspace = append(r.Keyspace, d)
	}
	sort.Slice(r.Keyspace, func(i, j int) bool { return r.Keyspace[i].DB < r.Keyspace[j].DB })

	for _, d := range r.Keyspace {
		if err := r.sampleDB(ctx, opts, d.DB, sample); err != nil {
			return nil, err
		}
	}
	sort.Slice(r.BiggestKeys, func(i, j int) bool { return r.BiggestKeys[i].Bytes > r.BiggestKeys[j].Bytes })
	if len(r.BiggestKeys) > 10 {
		r.BiggestKeys = r.BiggestKeys[:10]
	}

	// COMMAND INFO answers nil for a command the server does not have
	// (or has renamed away, as managed services do).
	info2, err := c.Do(ctx, "COMMAND", "INFO", "psync").Slice()
	r.ReplicationCommands = err == nil && len(info2) == 1 && info2[0] != nil
	if r.ReplicationCommands {
		r.CaptureNote = "PSYNC is present: `redis sync --mode auto` will try it first and fall back to SCAN + DUMP if the server refuses it"
	} else {
		r.CaptureNote = "PSYNC is not available: `redis sync` will use SCAN + DUMP, and --follow keyspace notifications (best effort)"
	}
	return r, nil
}

func (r *RedisReport) sampleDB(ctx context.Context, opts *redis.Options, db, sample int) error {
	o := *opts
	o.DB = db
	c := redis.NewClient(&o)
	defer c.Close()
	var cursor uint64
	seen := 0
	for {
		keys, next, err := c.Scan(ctx, cursor, "", 500).Result()
		if err != nil {
			return fmt.Errorf("redis source db %d: SCAN: %w", db, err)
		}
		pipe := c.Pipeline()
		types := make([]*redis.StatusCmd, len(keys))
		mems := make([]*redis.IntCmd, len(keys))
		for i, k := range keys {
			types[i] = pipe.Type(ctx, k)
			// SAMPLES 0 would walk every element of a huge key on the
			// production server; 64 estimates aggregates closely enough
			// to tell a big key from a small one at a bounded cost.
			mems[i] = pipe.MemoryUsage(ctx, k, 64)
		}
		pipe.Exec(ctx) // per-key errors (a key expired meanwhile) are read below
		for i, k := range keys {
			t := types[i].Val()
			if t == "" || t == "none" {
				continue
			}
			r.TypeMix[t]++
			r.SampledKeys++
			r.BiggestKeys = append(r.BiggestKeys, RedisKey{DB: db, Key: k, Type: t, Bytes: mems[i].Val()})
			seen++
		}
		if len(r.BiggestKeys) > 100 {
			sort.Slice(r.BiggestKeys, func(i, j int) bool { return r.BiggestKeys[i].Bytes > r.BiggestKeys[j].Bytes })
			r.BiggestKeys = r.BiggestKeys[:10]
		}
		cursor = next
		if cursor == 0 || seen >= sample {
			return nil
		}
	}
}

func infoFields(info string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			m[k] = v
		}
	}
	return m
}

// BigKeyBytes is the MEMORY USAGE from which a key is reported as big: one
// that a DUMP/RESTORE moves as one payload and that is worth knowing about
// before the sync (redis sync's --big-key-mb default is of this order).
const BigKeyBytes = 1 << 20

// persistence describes RDB and AOF from INFO persistence, with the save
// schedule from CONFIG GET when the server allows it (managed services
// often do not).
func persistence(ctx context.Context, c *redis.Client, f map[string]string) string {
	var parts []string
	if f["aof_enabled"] == "1" {
		parts = append(parts, "AOF on")
	} else {
		parts = append(parts, "AOF off")
	}
	if save, err := c.ConfigGet(ctx, "save").Result(); err == nil {
		if v := save["save"]; v != "" {
			parts = append(parts, "RDB snapshots (save "+v+")")
		} else {
			parts = append(parts, "RDB snapshots off")
		}
	} else if t := f["rdb_last_save_time"]; t != "" {
		parts = append(parts, "RDB last saved at unix time "+t+" (CONFIG not allowed: schedule unknown)")
	}
	if f["rdb_last_bgsave_status"] != "" && f["rdb_last_bgsave_status"] != "ok" {
		parts = append(parts, "last background save "+f["rdb_last_bgsave_status"])
	}
	return strings.Join(parts, ", ")
}
