package snapshot

import (
	"errors"
	"io"
	"os"
	"sync"
)

// spool carries one chunk's COPY data from the source to the target: the
// source side appends at its own speed while the target side reads from
// the start, never past what was written, waiting for more until the
// source side closes it. So the source transaction ends as soon as the
// source has sent the chunk, however slowly the target writes it (a pipe
// would hold the source transaction open for as long as the target
// takes), while memory stays bounded.
//
// The first spoolMemory bytes not yet read are held in memory; once the
// reader lags further behind, the rest of the chunk goes to an unlinked
// temporary file, created then. Every byte through the file costs a
// write and a read of the page cache (about 1 CPU-second per 500 MB of
// COPY text here, as much as the whole process otherwise spends); held
// in memory it costs one copy.
type spool struct {
	mu   sync.Mutex
	more *sync.Cond
	// mem holds the bytes before any spill, in blocks of spoolBlock,
	// from the first block's memOff on not read yet; memBytes counts
	// those unread.
	mem              [][]byte
	memOff, memBytes int
	// f, once the memory was full, holds the rest of the chunk:
	// written bytes of it, read by the reader up to fileRead.
	f                   *os.File
	fileBytes, fileRead int64
	closed              bool
	err                 error // the writer's error once closed, or the reader's abort
}

// spoolMemory is how many unread bytes one spool holds in memory before
// it spills to a file: jobs × spoolMemory is the copy's largest buffer
// (64 MiB at --jobs 4). A 32 MiB chunk's COPY text mostly fits, as the
// target reads while the source writes.
const spoolMemory = 16 << 20

// spoolBlock is the size of the blocks that hold a spool's memory
// (pipeBuffer: the source side writes in blocks of that size).
const spoolBlock = pipeBuffer

var spoolBlocks = sync.Pool{New: func() any { return make([]byte, 0, spoolBlock) }}

func newSpool() (*spool, error) {
	s := &spool{}
	s.more = sync.NewCond(&s.mu)
	return s, nil
}

// Write appends p; it fails once the reader aborted.
func (s *spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	if s.f == nil && s.memBytes+len(p) <= spoolMemory {
		n := len(p)
		for len(p) > 0 {
			if len(s.mem) == 0 || len(s.mem[len(s.mem)-1]) == cap(s.mem[len(s.mem)-1]) {
				s.mem = append(s.mem, spoolBlocks.Get().([]byte)[:0])
			}
			last := &s.mem[len(s.mem)-1]
			k := min(len(p), cap(*last)-len(*last))
			*last = append(*last, p[:k]...)
			p = p[k:]
		}
		s.memBytes += n
		s.more.Broadcast()
		s.mu.Unlock()
		return n, nil
	}
	if s.f == nil {
		f, err := os.CreateTemp("", "replicator-chunk-*")
		if err != nil {
			s.mu.Unlock()
			return 0, err
		}
		os.Remove(f.Name()) // gone with the last descriptor, even after a kill -9
		s.f = f
	}
	f, off := s.f, s.fileBytes
	s.mu.Unlock()
	// Only this goroutine writes, and the reader never reads past
	// fileBytes: the write needs no lock.
	n, err := f.WriteAt(p, off)
	s.mu.Lock()
	s.fileBytes += int64(n)
	s.more.Broadcast()
	s.mu.Unlock()
	return n, err
}

// CloseWrite ends the data; err non-nil makes the reader fail with it.
func (s *spool) CloseWrite(err error) {
	s.mu.Lock()
	s.closed = true
	if s.err == nil {
		s.err = err
	}
	s.more.Broadcast()
	s.mu.Unlock()
}

// Abort makes the writer's next Write fail with err (the reader gave up).
func (s *spool) Abort(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.more.Broadcast()
	s.mu.Unlock()
}

// Close releases the memory and the file; call it once both sides are
// done.
func (s *spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.mem {
		spoolBlocks.Put(b[:0]) //nolint:staticcheck // a slice header, as the pool's New makes
	}
	s.mem, s.memBytes = nil, 0
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

// reader reads the spool from its start.
func (s *spool) reader() io.Reader { return &spoolReader{s: s} }

type spoolReader struct{ s *spool }

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for s.memBytes == 0 && s.fileRead >= s.fileBytes && !s.closed && s.err == nil {
		s.more.Wait()
	}
	if s.memBytes > 0 {
		// Memory first: whatever went to the file was written after it.
		n := 0
		for n < len(p) && s.memBytes > n {
			b := s.mem[0]
			k := copy(p[n:], b[s.memOff:])
			n += k
			s.memOff += k
			// A drained block goes back to the pool unless it is the
			// writer's last one, not full yet: the writer appends to it.
			if s.memOff == len(b) && (len(s.mem) > 1 || len(b) == cap(b)) {
				spoolBlocks.Put(b[:0]) //nolint:staticcheck // a slice header, as the pool's New makes
				s.mem, s.memOff = s.mem[1:], 0
			}
		}
		s.memBytes -= n
		s.mu.Unlock()
		return n, nil
	}
	avail, off, f, err := s.fileBytes-s.fileRead, s.fileRead, s.f, s.err
	s.mu.Unlock()
	if avail <= 0 {
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	n, err := f.ReadAt(p[:min(int64(len(p)), avail)], off)
	s.mu.Lock()
	s.fileRead += int64(n)
	s.mu.Unlock()
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}
