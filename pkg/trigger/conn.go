package trigger

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
)

// connSlot is one source connection used by one role at a time (ticker,
// batch reader, bookkeeping), so that these can run concurrently without
// a pool. A connection found closed (after a network error or a restart of
// the source) is replaced on the next use.
type connSlot struct {
	mu   sync.Mutex
	cfg  *pgx.ConnConfig
	conn *pgx.Conn
}

// acquire locks the slot and returns its connection; release unlocks it.
func (s *connSlot) acquire(ctx context.Context) (*pgx.Conn, func(), error) {
	s.mu.Lock()
	if s.conn == nil || s.conn.IsClosed() {
		conn, err := pgutil.ConnectConfig(ctx, s.cfg.Copy(), "source")
		if err != nil {
			s.mu.Unlock()
			return nil, nil, err
		}
		s.conn = conn
	}
	return s.conn, s.mu.Unlock, nil
}

func (s *connSlot) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close(context.Background())
		s.conn = nil
	}
}
