package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// The spool hands the reader every byte written, in order, while the
// writer is still writing; the writer's error reaches the reader, and the
// reader's abort stops the writer.
func TestSpool(t *testing.T) {
	sp, err := newSpool()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	want := bytes.Repeat([]byte("0123456789abcdef\n"), 100_000)
	go func() {
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 7919)
			if _, err := sp.Write(rest[:n]); err != nil {
				sp.CloseWrite(err)
				return
			}
			rest = rest[n:]
		}
		sp.CloseWrite(nil)
	}()
	got, err := io.ReadAll(sp.reader())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (err %v), want the %d written", len(got), err, len(want))
	}

	// A reader that lags by more than spoolMemory: the rest goes to the
	// file, and the reader still gets every byte in order.
	late, _ := newSpool()
	defer late.Close()
	var big []byte
	for i := 0; len(big) < spoolMemory*2+12345; i++ {
		big = append(big, fmt.Sprintf("%d\tsome row text\n", i)...)
	}
	for rest := big; len(rest) > 0; {
		n := min(len(rest), pipeBuffer)
		if _, err := late.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	late.CloseWrite(nil)
	if late.f == nil || late.memBytes > spoolMemory {
		t.Errorf("a lagging reader: spilled %v, %d bytes held in memory; want a spill and at most %d in memory", late.f != nil, late.memBytes, spoolMemory)
	}
	got, err = io.ReadAll(late.reader())
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("lagging reader: read %d bytes (err %v), want the %d written", len(got), err, len(big))
	}

	failed, _ := newSpool()
	defer failed.Close()
	boom := errors.New("source gone")
	failed.Write([]byte("partial"))
	failed.CloseWrite(boom)
	if _, err := io.ReadAll(failed.reader()); !errors.Is(err, boom) {
		t.Errorf("reader after the writer failed: %v, want %v", err, boom)
	}

	aborted, _ := newSpool()
	defer aborted.Close()
	aborted.Abort(boom)
	if _, err := aborted.Write([]byte("more")); !errors.Is(err, boom) {
		t.Errorf("write after the reader aborted: %v, want %v", err, boom)
	}
}
