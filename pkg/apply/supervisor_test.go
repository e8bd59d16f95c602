package apply

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The reconnect wait grows from the minimum to the maximum, jittered but
// never outside the bounds, and starts over after Reset.
func TestReconnectBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 2 * time.Second
	for run := 0; run < 50; run++ {
		b := newReconnectBackoff(lo, hi)
		var waits []time.Duration
		for i := 0; i < 10; i++ {
			waits = append(waits, b.Next())
		}
		for i, w := range waits {
			if w < lo || w > hi {
				t.Fatalf("wait %d is %s, outside [%s, %s]: %v", i, w, lo, hi, waits)
			}
		}
		// ±25% jitter around 100, 200, 400 ms: the third is always longer
		// than the first could be.
		if waits[0] > lo*5/4+time.Millisecond || waits[2] < lo*3 || waits[9] < hi*3/4 {
			t.Fatalf("waits do not grow as doubling with ±25%% jitter: %v", waits)
		}
		b.Reset()
		if w := b.Next(); w > lo*5/4+time.Millisecond {
			t.Fatalf("first wait after Reset is %s", w)
		}
	}
}

// A panic inside the boundary becomes a fatal error for its stage, with
// the stack in the log; errors pass through untouched.
func TestGuardRecoversPanics(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	log := zap.New(core)
	err := guard("apply", log, func() error {
		var m map[string]int
		m["boom"]++ // a nil map write: a runtime panic, as a bug would cause
		return nil
	})()
	var se *StageError
	var pe *PanicError
	if !errors.As(err, &se) || se.Stage != "apply" || !errors.As(err, &pe) {
		t.Fatalf("guard returned %v (%T), want a StageError of apply wrapping a PanicError", err, err)
	}
	if IsRetryable(err) {
		t.Error("a panic is retried")
	}
	if !strings.Contains(err.Error(), "assignment to entry in nil map") || strings.Contains(err.Error(), "goroutine") {
		t.Errorf("error %q: want the panic's value and no stack", err)
	}
	entries := logs.FilterMessage("stream stopped by a panic").All()
	if len(entries) != 1 {
		t.Fatalf("%d log entries for the panic, want 1", len(entries))
	}
	if stack, _ := entries[0].ContextMap()["stack"].(string); !strings.Contains(stack, "TestGuardRecoversPanics") {
		t.Errorf("the logged stack does not show where it panicked:\n%s", stack)
	}
	// A panic whose value reads like a lost connection is still fatal.
	if err := guard("capture", log, func() error { panic(io.ErrUnexpectedEOF) })(); IsRetryable(err) {
		t.Errorf("a panic with value %v is retried", io.ErrUnexpectedEOF)
	}
	want := errors.New("plain")
	if err := guard("apply", log, func() error { return want })(); err != want {
		t.Errorf("guard changed an error: %v", err)
	}
}
