package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"replicator/pkg/units"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/internal/demoapp"
	"replicator/internal/testenv"
	"replicator/pkg/apply"
	"replicator/pkg/audit"
	"replicator/pkg/cutover"
	"replicator/pkg/pgutil"
	"replicator/pkg/redissync"
	"replicator/pkg/redisverify"
	"replicator/pkg/snapshot"
	"replicator/pkg/trigger"
	"replicator/pkg/verify"
)

// Options configure a demo run.
type Options struct {
	Out      io.Writer         // the narrative; required
	Log      *zap.Logger       // the components' logs; nil for none
	Progress snapshot.Progress // snapshot progress display; nil for none
	Size     demoapp.Size      // zero: demoapp.DefaultSize
	// Stream is how long the stream runs under load before the load stops.
	// Zero means 10 s.
	Stream time.Duration
	// WritesPerSecond is the load on each of Postgres and Redis. Zero
	// means 200.
	WritesPerSecond int
}

// Result is what the demo proved.
type Result struct {
	PostgresIdentical bool
	RedisIdentical    bool
	MaxApplyLag       float64 // seconds, sampled each second under load after the first 2 s
	PGWrites, RWrites int64
	Fallback          *Fallback
}

// Run runs the demo. It returns an error only when something failed to
// run; differences found by verification are in the Result.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Size == (demoapp.Size{}) {
		o.Size = demoapp.DefaultSize
	}
	if o.Stream == 0 {
		o.Stream = 10 * time.Second
	}
	if o.WritesPerSecond == 0 {
		o.WritesPerSecond = 200
	}
	start := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }

	say("replicator demo: a live Postgres and Redis migrated on throwaway local servers")
	say("\n[1/8] starting servers")
	srcPG, dstPG, srcR, dstR, stop, err := startServers()
	if err != nil {
		return nil, err
	}
	defer stop()
	say("      source Postgres 127.0.0.1:%d, target Postgres 127.0.0.1:%d, source Redis %s, target Redis %s",
		srcPG.Port, dstPG.Port, srcR.Addr(), dstR.Addr())
	// The Heroku path: the source cannot decode logically (wal_level
	// replica, so trigger capture), and one login role, not a superuser,
	// owns the database and is both the app's login and the replicator's.
	if err := exec(ctx, srcPG.URL("postgres"), `CREATE ROLE shop LOGIN NOSUPERUSER PASSWORD '`+appPassword+`'`); err != nil {
		return nil, err
	}
	if err := exec(ctx, srcPG.URL("postgres"), `CREATE DATABASE shop OWNER shop`); err != nil {
		return nil, err
	}
	if err := exec(ctx, dstPG.URL("postgres"), "CREATE DATABASE shop"); err != nil {
		return nil, err
	}
	if err := exec(ctx, srcPG.URL("shop"), "ALTER SCHEMA public OWNER TO shop"); err != nil {
		return nil, err
	}
	source, target := srcPG.URLAs("shop", appPassword, "shop"), dstPG.URL("shop")

	say("\n[2/8] seeding the app: %d users with orders, products, events, documents; a Redis cache", o.Size.Users)
	if err := demoapp.Seed(ctx, source, o.Size); err != nil {
		return nil, err
	}
	appURL := source // the app and the replicator share the login, as on Heroku
	if err := seedRedis(ctx, srcR, o.Size.Users); err != nil {
		return nil, err
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var pgStats demoapp.Stats
	var rWrites int64
	var loads sync.WaitGroup
	loads.Add(2)
	go func() { defer loads.Done(); demoapp.Load(loadCtx, appURL, o.WritesPerSecond, &pgStats) }()
	go func() { defer loads.Done(); rWrites = loadRedis(loadCtx, srcR, o.WritesPerSecond) }()
	say("      live load started: ~%d writes/s to Postgres and to Redis, running until verification", o.WritesPerSecond)

	say("\n[3/8] audit")
	conn, err := pgutil.Connect(ctx, source, "source")
	if err != nil {
		return nil, err
	}
	rep, err := audit.Postgres(ctx, conn, audit.Options{})
	conn.Close(ctx)
	if err != nil {
		return nil, err
	}
	say("      Postgres %s, %d tables, %s; capture: %s (%s)", rep.Version, len(rep.Tables), units.Bytes(rep.SizeBytes), rep.Capture.Mode, rep.Capture.Reason)
	if len(rep.NoReplicaKey) > 0 {
		say("      tables without a primary key: %v -> the snapshot sets REPLICA IDENTITY FULL on them (--replica-identity-full)", rep.NoReplicaKey)
	}

	reg := prometheus.NewRegistry()
	snapMetrics, err := snapshot.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	verifyMetrics, err := verify.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	say("\n[4/8] snapshot: schema, parallel copy in chunks (each under a short snapshot of its own), indexes, sequences")
	res, err := snapshot.Run(ctx, snapshot.Config{SourceURL: source, TargetURL: target, Jobs: 4,
		ReplicaIdentityFull: true, Progress: o.Progress, Metrics: snapMetrics}, o.Log)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	streamFrom := "LSN " + res.ConsistentLSN
	if res.ConsistentLSN == "" {
		// Trigger capture: the changelog rows committed after the
		// copy's snapshot.
		streamFrom = "the changelog rows committed after the copy's snapshot (" + res.SnapshotXmin + ")"
	}
	say("      copied %d tables, %d rows (%s) in %s; the stream starts at %s", res.Tables, res.Rows, units.Bytes(res.Bytes),
		res.Duration.Round(time.Millisecond), streamFrom)

	say("\n[5/8] streaming Postgres changes and following Redis, under load for %s", o.Stream)
	rMetrics, err := redissync.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	am, err := apply.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	tm, err := trigger.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	streamErr := make(chan error, 2)
	go func() {
		streamErr <- apply.Stream(streamCtx, apply.StreamConfig{SourceURL: source, TargetURL: target,
			Metrics: am, TriggerMetrics: tm}, o.Log)
	}()
	rOpts := &redis.Options{Addr: srcR.Addr()}
	go func() {
		_, err := redissync.Sync(streamCtx, redissync.SyncConfig{Source: rOpts, Follow: true,
			Writer: redissync.WriterConfig{Target: &redis.Options{Addr: dstR.Addr()}}, Metrics: rMetrics}, o.Log)
		streamErr <- err
	}()
	var maxLag float64
	for i := 1; i <= int(o.Stream/time.Second); i++ {
		select {
		case err := <-streamErr:
			return nil, fmt.Errorf("stream stopped: %w", err)
		case <-time.After(time.Second):
		}
		m := gather(reg)
		// The first seconds catch up on what was written during the
		// copy; the lag held under load is measured after them.
		if i > 2 {
			maxLag = math.Max(maxLag, m["replicator_apply_lag_seconds"])
		}
		say("      t+%2ds  Postgres apply lag %.2f s, %s behind; %d transactions applied | Redis follow lag %s",
			i, m["replicator_apply_lag_seconds"], units.Bytes(int64(m["replicator_source_lag_bytes"])),
			int64(m["replicator_applied_transactions_total"]), units.Bytes(int64(m["replicator_redis_follow_lag_bytes"])))
	}

	say("\n[6/8] cutover while the app still writes: fence (a trigger on every table: the login is shared), drain, sequences forward, verify, switch steps")
	err = cutover.Run(ctx, cutover.Config{SourceURL: source, TargetURL: target, Fence: true,
		SequenceMargin: 1000, Timeout: 2 * time.Minute, VerifyMetrics: verifyMetrics}, indent(o.Out), o.Log)
	if err != nil && !errors.Is(err, cutover.ErrDifferences) {
		return nil, fmt.Errorf("cutover: %w", err)
	}
	stopLoad()
	loads.Wait()
	say("      the app's writes after the fence were refused: %d attempts failed (%d committed before it)", pgStats.Errors.Load(), pgStats.Transactions.Load())
	say("\n      the verification report, on the frozen source and the target:")
	vrep, err := verify.Run(ctx, verify.Config{Source: source, Target: target, Metrics: verifyMetrics}, o.Log)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	vrep.WriteText(o.Out)
	if err := waitRedisFollow(ctx, srcR, reg, 60*time.Second); err != nil {
		return nil, err
	}
	rrep, err := redisverify.Run(ctx, redisverify.Config{Source: rOpts, Target: &redis.Options{Addr: dstR.Addr()}}, o.Log)
	if err != nil {
		return nil, fmt.Errorf("redis verify: %w", err)
	}
	rrep.Write(o.Out, "text")

	say("\n[7/8] the fallback window: the app switches to the target and writes there; `replicator reverse` carries it back; then `cutover --rollback`")
	fb, err := fallback(ctx, o, source, target, verifyMetrics)
	if err != nil {
		return nil, err
	}
	stopStream()
	for i := 0; i < 2; i++ {
		if err := <-streamErr; err != nil && !errors.Is(err, context.Canceled) {
			o.Log.Warn("stream ended with an error", zap.Error(err))
		}
	}

	r := &Result{PostgresIdentical: !vrep.Different(), RedisIdentical: rrep.Identical(), MaxApplyLag: maxLag,
		PGWrites: pgStats.Transactions.Load(), RWrites: rWrites, Fallback: fb}
	say("\n[8/8] result")
	say("      Postgres: %s after %d live write transactions; max apply lag under load %.2f s (after the catch-up on writes made during the copy)", verdict(r.PostgresIdentical), r.PGWrites, maxLag)
	say("      Redis:    %s after %d live writes", verdict(r.RedisIdentical), r.RWrites)
	say("      Fallback: %s after %d write transactions on the target; rollback write freeze %.1f s", verdict(fb.Identical), fb.TargetWrites, fb.FreezeSeconds)
	say("      whole demo: %s", time.Since(start).Round(time.Second))
	return r, nil
}

// appPassword is the demo app role's password on the throwaway server.
const appPassword = "shop-app-demo-pw"

// indent prefixes every line written through it, so nested output reads as
// part of its step.
func indent(w io.Writer) io.Writer { return &indenter{w: w, start: true} }

type indenter struct {
	w     io.Writer
	start bool
}

func (in *indenter) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if in.start {
			b = append(b, "      "...)
		}
		b = append(b, c)
		in.start = c == '\n'
	}
	if _, err := in.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func verdict(ok bool) string {
	if ok {
		return "IDENTICAL"
	}
	return "DIFFERENT"
}

func startServers() (srcPG, dstPG *testenv.Postgres, srcR, dstR *testenv.Redis, stop func(), err error) {
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if srcPG, err = testenv.StartPostgres(testenv.PostgresOptions{WalLevel: "replica"}); err != nil {
		return
	}
	closers = append(closers, srcPG.Close)
	if dstPG, err = testenv.StartPostgres(testenv.PostgresOptions{}); err != nil {
		return
	}
	closers = append(closers, dstPG.Close)
	if srcR, err = testenv.StartRedis(testenv.RedisOptions{}); err != nil {
		return
	}
	closers = append(closers, srcR.Close)
	if dstR, err = testenv.StartRedis(testenv.RedisOptions{}); err != nil {
		return
	}
	closers = append(closers, dstR.Close)
	return
}

// gather reads the current value of every gauge and counter (summed over
// labels) from the registry.
func gather(reg *prometheus.Registry) map[string]float64 {
	out := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				out[mf.GetName()] += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[mf.GetName()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// waitRedisFollow waits until the follower has applied the source's
// replication offset as it is now (the load has stopped), or limit passes.
func waitRedisFollow(ctx context.Context, src *testenv.Redis, reg *prometheus.Registry, limit time.Duration) error {
	c := src.Client(0)
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	var offset float64
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "master_repl_offset:"); ok {
			offset, _ = strconv.ParseFloat(v, 64)
		}
	}
	deadline := time.Now().Add(limit)
	for gather(reg)["replicator_redis_follow_applied_offset"] < offset {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the Redis follower did not reach the source's offset %.0f within %s", offset, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
