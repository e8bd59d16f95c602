package redissync

import (
	"testing"
	"time"
)

// The reconnect delays stay within [1 s, 30 s], start near the minimum,
// grow to near the maximum, start over after Reset, and are jittered.
func TestReconnectBackOff(t *testing.T) {
	b := newReconnectBackOff()
	seen := map[time.Duration]bool{}
	for round := 0; round < 200; round++ {
		b.Reset()
		var last time.Duration
		for i := 0; i < 12; i++ {
			d := b.NextBackOff()
			if d < reconnectMin || d > reconnectMax {
				t.Fatalf("round %d attempt %d: delay %s outside [%s, %s]", round, i, d, reconnectMin, reconnectMax)
			}
			if i == 0 && d > 2*reconnectMin {
				t.Fatalf("first delay after a drop %s, want about %s", d, reconnectMin)
			}
			last = d
			seen[d] = true
		}
		if last < reconnectMax/2 {
			t.Fatalf("round %d: after 12 failed attempts the delay is only %s", round, last)
		}
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct delays in 2400: no jitter", len(seen))
	}
}
