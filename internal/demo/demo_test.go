package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"replicator/internal/demoapp"
)

// The demo is the README's first command: on a small app it must migrate
// Postgres and Redis under live load and prove both identical.
func TestDemoEndsIdentical(t *testing.T) {
	var out, logs bytes.Buffer
	log := zap.New(NarrativeCore(&logs, zap.WarnLevel))
	res, err := Run(context.Background(), Options{Out: &out, Log: log, Stream: 3 * time.Second, WritesPerSecond: 100,
		Size: demoapp.Size{Users: 2000, Products: 50, Events: 5000, Documents: 20}})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !res.PostgresIdentical || !res.RedisIdentical {
		t.Fatalf("demo ended with differences:\n%s", out.String())
	}
	if fb := res.Fallback; fb == nil || !fb.Identical || fb.TargetWrites < 50 {
		t.Fatalf("the fallback window did not bring the target's writes back: %+v\n%s", res.Fallback, out.String())
	}
	if res.PGWrites < 100 || res.RWrites < 100 {
		t.Fatalf("live load wrote only %d Postgres and %d Redis writes:\n%s", res.PGWrites, res.RWrites, out.String())
	}
	for _, want := range []string{"capture: trigger", "step 3/7: fence writes on the source: done (a trigger refuses writes", "step 6/7: final verification: done",
		"write freeze: ", "fallback: capture on the target: done", "rollback step 5/7: verify the source against the target: done",
		"rollback write freeze: ", "the app writes to the source again", "[8/8] result", "Postgres: IDENTICAL", "Redis:    IDENTICAL"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	// The components' warnings read as the narrative does: one line each,
	// no JSON.
	if !strings.Contains(logs.String(), "      warning: table has no primary key") {
		t.Errorf("the keyless table's warning is not a narrative line:\n%s", logs.String())
	}
	for _, l := range strings.Split(strings.TrimSuffix(out.String()+logs.String(), "\n"), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "{") || strings.Contains(l, `":"`) {
			t.Errorf("a JSON line in the demo's output: %s", l)
		}
	}
}
