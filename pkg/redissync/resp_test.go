package redissync

import (
	"bufio"
	"bytes"
	"testing"
	"time"
)

// FuzzReplicationStream: a hostile or corrupt command stream (or diskless
// transfer) gives errors, never a panic, a loop or an allocation ahead of
// the input.
func FuzzReplicationStream(f *testing.F) {
	f.Add([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n"))
	f.Add([]byte("*1\r\n$536870912\r\nxx"))
	f.Add([]byte("*99999999\r\n"))
	f.Add([]byte("$EOF:0123456789012345678901234567890123456789\r\nREDIS0009\xff0123456789012345678901234567890123456789*1\r\n$4\r\nPING\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		timer := time.AfterFunc(5*time.Second, func() { panic("stream reader still running after 5s") })
		defer timer.Stop()
		rc := &replConn{br: bufio.NewReaderSize(bytes.NewReader(data), 64<<10)}
		if bytes.HasPrefix(data, []byte("$")) {
			_, drain, err := rc.rdb()
			if err != nil {
				return
			}
			drain()
		}
		for i := 0; i <= len(data); i++ {
			if _, _, err := rc.readCommand(); err != nil {
				return
			}
		}
		t.Fatalf("more commands than bytes")
	})
}
