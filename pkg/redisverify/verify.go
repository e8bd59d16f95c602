package redisverify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/redissync"
)

// Config configures a comparison.
type Config struct {
	Source, Target *redis.Options
	// Sample checks this many random source keys per database instead of
	// every key (0 = every key, and keys only on the target are listed).
	Sample int
	// TTLTolerance is how far the two TTLs may differ. Default 2s.
	TTLTolerance time.Duration
	// MaxListed caps the differences listed in the report (all are
	// counted). Default 100.
	MaxListed int
	// Workers compare batches of keys in parallel. Default 4.
	Workers int
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Source == nil || c.Target == nil {
		return errors.New("redis verify: give both --source and --target")
	}
	if c.Sample < 0 || c.TTLTolerance < 0 || c.MaxListed < 0 || c.Workers < 0 {
		return errors.New("redis verify: negative limits")
	}
	return nil
}

// DBCount is one database's key counts.
type DBCount struct {
	DB     int   `json:"db"`
	Source int64 `json:"source_keys"`
	Target int64 `json:"target_keys"`
}

// Difference is one key that differs.
type Difference struct {
	DB     int    `json:"db"`
	Key    string `json:"key"`
	Kind   string `json:"kind"` // missing, extra, type, value, ttl
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
}

// LibraryCount is how many function libraries each side has.
type LibraryCount struct {
	Source int `json:"source"`
	Target int `json:"target"`
}

// Report is the outcome. A difference with DB -1 is about the server, not
// a key: a function library (Key is its name).
type Report struct {
	Databases   []DBCount    `json:"databases"`
	Libraries   LibraryCount `json:"function_libraries"`
	Checked     int64        `json:"keys_checked"`
	Sampled     bool         `json:"sampled"`
	DiffCount   int64        `json:"differences_total"`
	Differences []Difference `json:"differences"`
	Started     time.Time    `json:"started"`
	Duration    string       `json:"duration"`
}

// Identical reports whether no difference was found.
func (r *Report) Identical() bool {
	if r.DiffCount > 0 {
		return false
	}
	for _, d := range r.Databases {
		if d.Source != d.Target {
			return false
		}
	}
	return true
}

type side struct {
	o       *redis.Options
	workers int
	mu      sync.Mutex
	clients map[int]*redis.Client
}

func (s *side) db(n int) *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clients[n]; c != nil {
		return c
	}
	o := *s.o
	o.DB = n
	o.PoolSize = s.workers + 1
	c := redis.NewClient(&o)
	s.clients[n] = c
	return c
}

func (s *side) close() {
	for _, c := range s.clients {
		c.Close()
	}
}

// Run compares source and target.
func Run(ctx context.Context, cfg Config, log *zap.Logger) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TTLTolerance == 0 {
		cfg.TTLTolerance = 2 * time.Second
	}
	if cfg.MaxListed == 0 {
		cfg.MaxListed = 100
	}
	if cfg.Workers == 0 {
		cfg.Workers = 4
	}
	src := &side{o: cfg.Source, workers: cfg.Workers, clients: map[int]*redis.Client{}}
	dst := &side{o: cfg.Target, workers: cfg.Workers, clients: map[int]*redis.Client{}}
	defer src.close()
	defer dst.close()
	rep := &Report{Started: time.Now().UTC(), Sampled: cfg.Sample > 0}
	v := &verifier{cfg: cfg, src: src, dst: dst, rep: rep, log: log}

	sdbs, err := keyspace(ctx, src.db(0))
	if err != nil {
		return nil, explain("source", cfg.Source, err)
	}
	tdbs, err := keyspace(ctx, dst.db(0))
	if err != nil {
		return nil, explain("target", cfg.Target, err)
	}
	if err := v.libraries(ctx); err != nil {
		return nil, err
	}
	if done, err := v.clusters(ctx, sdbs, tdbs); done || err != nil {
		if err != nil {
			return nil, err
		}
		rep.Duration = time.Since(rep.Started).Round(time.Millisecond).String()
		return rep, nil
	}
	// The follower's positions are the tool's bookkeeping, not copied data.
	if err := scanAll(ctx, dst.db(0), func(keys []string) error {
		for _, k := range keys {
			if redissync.IsPositionKey(k) {
				tdbs[0]--
			}
		}
		return nil
	}, redissync.PositionKey+"*"); err != nil {
		return nil, fmt.Errorf("target Redis %s: %w", cfg.Target.Addr, err)
	}
	for db := 0; db < 16 || sdbs[db] > 0 || tdbs[db] > 0; db++ {
		if sdbs[db] == 0 && tdbs[db] == 0 {
			if db >= 16 {
				break
			}
			continue
		}
		rep.Databases = append(rep.Databases, DBCount{DB: db, Source: sdbs[db], Target: tdbs[db]})
		if err := v.database(ctx, db); err != nil {
			return nil, err
		}
	}
	rep.Duration = time.Since(rep.Started).Round(time.Millisecond).String()
	return rep, nil
}

// keyspace reads INFO keyspace: db → key count.
func keyspace(ctx context.Context, c *redis.Client) (map[int]int64, error) {
	info, err := c.Info(ctx, "keyspace").Result()
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "db")
		if !ok {
			continue
		}
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			continue
		}
		db, err := strconv.Atoi(rest[:i])
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(rest[i+1:], ",") {
			if n, ok := strings.CutPrefix(kv, "keys="); ok {
				out[db], _ = strconv.ParseInt(n, 10, 64)
			}
		}
	}
	return out, nil
}

type verifier struct {
	cfg      Config
	src, dst *side
	rep      *Report
	log      *zap.Logger
	mu       sync.Mutex // guards rep
}

func (v *verifier) diff(d Difference) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.DiffCount++
	if len(v.rep.Differences) < v.cfg.MaxListed {
		v.rep.Differences = append(v.rep.Differences, d)
	}
}

func (v *verifier) database(ctx context.Context, db int) error {
	s, t := v.src.db(db), v.dst.db(db)
	if v.cfg.Sample > 0 {
		var keys []string
		for i := 0; i < v.cfg.Sample; i++ {
			k, err := s.RandomKey(ctx).Result()
			if errors.Is(err, redis.Nil) {
				break
			}
			if err != nil {
				return fmt.Errorf("source db %d: RANDOMKEY: %w", db, err)
			}
			keys = append(keys, k)
		}
		return v.keys(ctx, db, s, t, keys)
	}
	// Batches of keys are compared by Workers goroutines; SCAN feeds them.
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan []string, v.cfg.Workers)
	for range v.cfg.Workers {
		g.Go(func() error {
			for keys := range batches {
				if err := v.keys(gctx, db, s, t, keys); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(batches)
		return scanAll(gctx, s, func(keys []string) error {
			select {
			case batches <- keys:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		})
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("source db %d: %w", db, err)
	}
	// Keys only the target has.
	return scanAll(ctx, t, func(keys []string) error {
		pipe := s.Pipeline()
		ex := make([]*redis.IntCmd, len(keys))
		for i, k := range keys {
			ex[i] = pipe.Exists(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("source db %d: EXISTS: %w", db, err)
		}
		for i, k := range keys {
			if ex[i].Val() == 0 && !(db == 0 && redissync.IsPositionKey(k)) {
				v.diff(Difference{DB: db, Key: k, Kind: "extra", Target: "present"})
			}
		}
		return nil
	})
}

func scanAll(ctx context.Context, c *redis.Client, fn func([]string) error, match ...string) error {
	var cursor uint64
	pattern := ""
	if len(match) > 0 {
		pattern = match[0]
	}
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, 500).Result()
		if err != nil {
			return fmt.Errorf("SCAN: %w", err)
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

type keyMeta struct {
	typ string
	ttl time.Duration
	str *redis.StringCmd
}

func meta(ctx context.Context, c *redis.Client, keys []string) ([]keyMeta, error) {
	pipe := c.Pipeline()
	types := make([]*redis.StatusCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	for i, k := range keys {
		types[i] = pipe.Type(ctx, k)
		ttls[i] = pipe.PTTL(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]keyMeta, len(keys))
	for i := range keys {
		out[i] = keyMeta{typ: types[i].Val(), ttl: ttls[i].Val()}
	}
	// Strings, the common case, are fetched in the same round trip count.
	pipe = c.Pipeline()
	for i, k := range keys {
		if out[i].typ == "string" {
			out[i].str = pipe.Get(ctx, k)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	return out, nil
}

func (v *verifier) keys(ctx context.Context, db int, s, t *redis.Client, keys []string) error {
	sm, err := meta(ctx, s, keys)
	if err != nil {
		return fmt.Errorf("source db %d: %w", db, err)
	}
	tm, err := meta(ctx, t, keys)
	if err != nil {
		return fmt.Errorf("target db %d: %w", db, err)
	}
	for i, k := range keys {
		a, b := sm[i], tm[i]
		if a.typ == "none" {
			continue // deleted on the source since SCAN listed it
		}
		v.mu.Lock()
		v.rep.Checked++
		v.mu.Unlock()
		if b.typ == "none" {
			v.diff(Difference{DB: db, Key: k, Kind: "missing", Source: a.typ})
			continue
		}
		if a.typ != b.typ {
			v.diff(Difference{DB: db, Key: k, Kind: "type", Source: a.typ, Target: b.typ})
			continue
		}
		if err := v.value(ctx, db, s, t, k, a, b); err != nil {
			return err
		}
		if !ttlClose(a.ttl, b.ttl, v.cfg.TTLTolerance) {
			v.diff(Difference{DB: db, Key: k, Kind: "ttl", Source: ttlText(a.ttl), Target: ttlText(b.ttl)})
		}
	}
	return nil
}

func (v *verifier) value(ctx context.Context, db int, s, t *redis.Client, k string, a, b keyMeta) error {
	var da, dbg string
	if a.typ == "string" {
		if a.str.Val() == b.str.Val() {
			return nil
		}
		v.diff(Difference{DB: db, Key: k, Kind: "value", Source: short(a.str.Val()), Target: short(b.str.Val())})
		return nil
	}
	for _, exact := range []bool{false, true} {
		var err error
		if da, err = valueDigest(ctx, s, k, a.typ, exact); err != nil {
			return fmt.Errorf("source db %d key %q: %w", db, k, err)
		}
		if dbg, err = valueDigest(ctx, t, k, b.typ, exact); err != nil {
			return fmt.Errorf("target db %d key %q: %w", db, k, err)
		}
		if da == dbg || a.typ == "list" || a.typ == "stream" {
			break
		}
	}
	if da != dbg {
		v.diff(Difference{DB: db, Key: k, Kind: "value", Source: a.typ + " digest " + da, Target: b.typ + " digest " + dbg})
	}
	if a.typ == "stream" {
		return v.groups(ctx, db, s, t, k)
	}
	return nil
}

func ttlClose(a, b, tol time.Duration) bool {
	if (a < 0) != (b < 0) {
		return false
	}
	if a < 0 {
		return a == b
	}
	d := a - b
	return d <= tol && -d <= tol
}

func ttlText(d time.Duration) string {
	if d < 0 {
		return "no expiry"
	}
	return d.Round(time.Millisecond).String()
}

func short(s string) string {
	if len(s) > 80 {
		return strconv.Quote(s[:80]) + "..."
	}
	return strconv.Quote(s)
}
