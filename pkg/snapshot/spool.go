package snapshot

import (
	"errors"
	"io"
	"os"
	"sync"
)

// spool carries one chunk's COPY text from the source to the target
// through an unlinked temporary file: the source side appends at its own
// speed while the target side reads from the start, never past what was
// written, waiting for more until the source side closes it. So the
// source transaction ends as soon as the source has sent the chunk,
// however slowly the target writes it (a pipe would hold the source
// transaction open for as long as the target takes), while memory stays
// bounded: the chunk is on disk, at most one chunk per worker.
type spool struct {
	f       *os.File
	mu      sync.Mutex
	more    *sync.Cond
	written int64
	closed  bool
	err     error // the writer's error once closed, or the reader's abort
}

func newSpool() (*spool, error) {
	f, err := os.CreateTemp("", "replicator-chunk-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // gone with the last descriptor, even after a kill -9
	s := &spool{f: f}
	s.more = sync.NewCond(&s.mu)
	return s, nil
}

// Write appends p; it fails once the reader aborted.
func (s *spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	off, err := s.written, s.err
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := s.f.WriteAt(p, off)
	s.mu.Lock()
	s.written += int64(n)
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

// Close releases the file; call it once both sides are done.
func (s *spool) Close() error { return s.f.Close() }

// reader reads the spool from its start.
func (s *spool) reader() io.Reader { return &spoolReader{s: s} }

type spoolReader struct {
	s   *spool
	off int64
}

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for r.off >= s.written && !s.closed && s.err == nil {
		s.more.Wait()
	}
	avail, err := s.written-r.off, s.err
	s.mu.Unlock()
	if avail <= 0 {
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	n, err := s.f.ReadAt(p[:min(int64(len(p)), avail)], r.off)
	r.off += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}
