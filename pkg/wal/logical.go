package wal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"replicator/pkg/pgutil"
	"replicator/pkg/position"
)

// Config configures logical capture from one replication slot.
type Config struct {
	// SourceURL is the source's connection URL (a replication connection is
	// made from it). Required.
	SourceURL string
	// Slot and Publication are the names the snapshot created. Required.
	Slot        string
	Publication string
	// Start is where streaming starts: transactions that end at or before
	// it are not delivered (the larger of the slot's consistent point and
	// the target's applied position). Required.
	Start pglogrepl.LSN

	// TxnMemory is how many bytes of one transaction's changes are held in
	// memory before they are spilled to disk. Default (0) 8 MiB.
	TxnMemory int64
	// QueueMemory bounds the bytes of received transactions waiting for
	// apply. Default (0) 64 MiB.
	QueueMemory int64
	// SpillDir is where large transactions are spilled. Default ("") the
	// system's temporary directory.
	SpillDir string
	// StatusInterval is how often standby status is sent to the source;
	// keep it well under the source's wal_sender_timeout. Default (0) 2s.
	StatusInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.TxnMemory == 0 {
		c.TxnMemory = 8 << 20
	}
	if c.QueueMemory == 0 {
		c.QueueMemory = 64 << 20
	}
	if c.SpillDir == "" {
		c.SpillDir = os.TempDir()
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 2 * time.Second
	}
}

// Validate checks the configuration after defaults are applied.
func (c *Config) Validate() error {
	c.setDefaults()
	switch {
	case c.SourceURL == "":
		return errors.New("logical capture: no source URL")
	case c.Slot == "" || c.Publication == "":
		return errors.New("logical capture: the target's state names no slot or publication: run `replicator snapshot` again")
	case c.Start == 0:
		return errors.New("logical capture: no start position recorded: run `replicator snapshot` again")
	case c.TxnMemory < 1024 || c.QueueMemory < 1024:
		return fmt.Errorf("logical capture: memory bounds must be at least 1 KiB (txn %d, queue %d)", c.TxnMemory, c.QueueMemory)
	case c.StatusInterval < 10*time.Millisecond:
		return fmt.Errorf("logical capture: status interval %s is too short", c.StatusInterval)
	}
	if st, err := os.Stat(c.SpillDir); err != nil || !st.IsDir() {
		return fmt.Errorf("logical capture: spill directory %s does not exist: create it or choose another", c.SpillDir)
	}
	return nil
}

// Logical captures changes from a pgoutput replication slot. It is a
// Source; create it with OpenLogical and stop it with Close.
type Logical struct {
	cfg Config
	log *zap.Logger

	conn   *pgconn.PgConn
	out    chan *Txn
	mem    *semaphore.Weighted
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed

	committed atomic.Uint64 // end LSN of the last transaction committed on the target
	walEnd    atomic.Uint64 // latest WAL end the source reported
	closeOnce sync.Once
}

// OpenLogical connects to the source in replication mode, starts streaming
// from cfg.Start and receives in the background until Close or an error
// (reported by Next).
func OpenLogical(ctx context.Context, cfg Config, log *zap.Logger) (*Logical, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := pgutil.ConnectReplication(ctx, cfg.SourceURL, "source")
	if err != nil {
		return nil, err
	}
	// pgoutput reads publication_names as a list of identifiers, so a
	// name is quoted as an identifier inside the literal: unquoted, a
	// mixed-case name would be folded to lower case.
	args := []string{"proto_version '1'", "publication_names " + pgutil.QuoteLiteral(pgutil.QuoteIdent(cfg.Publication))}
	if err := pglogrepl.StartReplication(ctx, conn, pgutil.QuoteIdent(cfg.Slot), cfg.Start,
		pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		conn.Close(context.Background())
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedObject {
			return nil, fmt.Errorf("source: replication slot %q does not exist (%w): it was dropped since the snapshot, so the changes since then cannot be streamed: run `replicator cleanup --yes`, then `replicator snapshot` into an empty target database to copy again", cfg.Slot, err)
		}
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ObjectNotInPrerequisiteState && strings.Contains(pgErr.Message, "cannot read from logical replication slot") {
			// The slot was invalidated (max_slot_wal_keep_size): the
			// server's detail says why, the message alone does not.
			return nil, fmt.Errorf("source: replication slot %q is invalidated (%s): the WAL it held is gone, so the changes since cannot be streamed: run `replicator cleanup --yes`, then `replicator snapshot` into an empty target database; raise max_slot_wal_keep_size on the source to keep a stopped stream's slot longer", cfg.Slot, strings.TrimSuffix(pgErr.Detail, "."))
		}
		return nil, fmt.Errorf("start replication from slot %q at %s: %w", cfg.Slot, cfg.Start, err)
	}
	// Spill files live in a directory of this slot. Holding the slot means
	// no other stream of it runs, so files left by a killed predecessor
	// are removed now.
	spill := filepath.Join(cfg.SpillDir, "replicator-spill-"+cfg.Slot)
	if err := os.RemoveAll(spill); err != nil {
		log.Warn("could not remove old spill files", zap.String("dir", spill), zap.Error(err))
	}
	if err := os.MkdirAll(spill, 0o700); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("create the spill directory %s: %w", spill, err)
	}
	cfg.SpillDir = spill
	runCtx, cancel := context.WithCancel(context.Background())
	l := &Logical{cfg: cfg, log: log, conn: conn, out: make(chan *Txn, 1024),
		mem: semaphore.NewWeighted(cfg.QueueMemory), cancel: cancel, done: make(chan struct{})}
	l.committed.Store(uint64(cfg.Start))
	l.walEnd.Store(uint64(cfg.Start))
	log.Info("streaming from the source", zap.String("slot", cfg.Slot), zap.String("publication", cfg.Publication),
		zap.Stringer("start_lsn", cfg.Start))
	go func() {
		err := l.receive(runCtx)
		l.err = err
		close(l.done)
	}()
	return l, nil
}

// Next returns the next transaction in commit order. See Source.
func (l *Logical) Next(ctx context.Context) (*Txn, error) {
	if t, err := l.Poll(); t != nil || err != nil {
		return t, err
	}
	select {
	case t := <-l.out:
		l.release(t)
		return t, nil
	case <-l.done:
		return l.Poll()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Poll returns the next transaction if one is received, else nil. See
// Source.
func (l *Logical) Poll() (*Txn, error) {
	select {
	case <-l.done:
		// Everything received was queued before done was closed: deliver
		// it before the error.
		select {
		case t := <-l.out:
			l.release(t)
			return t, nil
		default:
		}
		return nil, l.err
	default:
	}
	select {
	case t := <-l.out:
		l.release(t)
		return t, nil
	default:
	}
	return nil, nil
}

// Pending reports whether received transactions are waiting for Next.
func (l *Logical) Pending() bool { return len(l.out) > 0 }

func (l *Logical) release(t *Txn) {
	if n := l.weight(t); n > 0 {
		l.mem.Release(n)
	}
}

func (l *Logical) weight(t *Txn) int64 {
	if t.buf == nil {
		return 0
	}
	return min(t.buf.inMemory(), l.cfg.QueueMemory)
}

// Committed advances the flush position reported to the source.
func (l *Logical) Committed(txn *Txn) {
	for {
		cur := l.committed.Load()
		end := uint64(txn.End.LSN())
		if end <= cur || l.committed.CompareAndSwap(cur, end) {
			return
		}
	}
}

// SourceEnd is the latest WAL position the source reported.
func (l *Logical) SourceEnd() pglogrepl.LSN { return pglogrepl.LSN(l.walEnd.Load()) }

// Close stops receiving, closes the connection and discards transactions
// not taken by Next. It may be repeated.
func (l *Logical) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		<-l.done
		for {
			select {
			case t := <-l.out:
				t.Close()
				continue
			default:
			}
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l.conn.Close(ctx)
		cancel()
	})
	return nil
}

func (l *Logical) noteEnd(lsn pglogrepl.LSN) {
	for {
		cur := l.walEnd.Load()
		if uint64(lsn) <= cur || l.walEnd.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// receive reads the replication stream until ctx ends or an error.
func (l *Logical) receive(ctx context.Context) error {
	dec := newDecoder(l.cfg.SpillDir, l.cfg.TxnMemory)
	defer dec.reset()
	// Stopping interrupts a read in progress.
	stop := context.AfterFunc(ctx, func() { l.conn.Conn().SetReadDeadline(time.Now()) })
	defer stop()
	// received is the end of the last transaction (or heartbeat) handed to
	// apply; idle means it has all been committed on the target.
	received := l.cfg.Start
	lastHeartbeat := time.Time{}
	nextStatus := time.Now()
	var deadline time.Time
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		idle := !dec.inTxn() && pglogrepl.LSN(l.committed.Load()) >= received
		if !time.Now().Before(nextStatus) {
			// Asking for a reply while idle makes the source send a
			// keepalive with its current position, which is then confirmed.
			if err := l.sendStatus(ctx, received, idle); err != nil {
				return err
			}
			nextStatus = time.Now().Add(l.cfg.StatusInterval)
		}
		// A read deadline on the socket rather than a context per message:
		// a context makes pgconn start a watcher for every message.
		if !nextStatus.Equal(deadline) {
			if err := l.conn.Conn().SetReadDeadline(nextStatus); err != nil {
				return fmt.Errorf("receive from the source's slot %q: %w", l.cfg.Slot, err)
			}
			deadline = nextStatus
		}
		raw, err := l.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive from the source's slot %q: %w", l.cfg.Slot, err)
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("source's slot %q: %w", l.cfg.Slot, pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return fmt.Errorf("source ended the replication stream of slot %q", l.cfg.Slot)
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("source's slot %q: %w", l.cfg.Slot, err)
				}
				l.noteEnd(ka.ServerWALEnd)
				// Between transactions, everything before the keepalive's
				// position has been sent; when all of it is applied, the
				// position itself can be confirmed, through the target's
				// state like any transaction, so the slot never holds WAL
				// because of an idle (or busy-elsewhere) source.
				if !dec.inTxn() && ka.ServerWALEnd > received && idle &&
					time.Since(lastHeartbeat) >= l.cfg.StatusInterval/2 {
					at := position.LSN(ka.ServerWALEnd)
					if err := l.enqueue(ctx, &Txn{End: at, Commit: at, Heartbeat: true}); err != nil {
						return err
					}
					received = ka.ServerWALEnd
					lastHeartbeat = time.Now()
				}
				if ka.ReplyRequested {
					nextStatus = time.Now()
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("source's slot %q: %w", l.cfg.Slot, err)
				}
				l.noteEnd(xld.ServerWALEnd)
				t, err := dec.feed(xld.WALStart, xld.WALData)
				if err != nil {
					return err
				}
				if t == nil {
					continue
				}
				if t.End.LSN() <= received {
					// Already applied (the source resends from its confirmed
					// position, which may be behind the target's).
					t.Close()
					continue
				}
				if err := l.enqueue(ctx, t); err != nil {
					return err
				}
				received = t.End.LSN()
			}
		default:
			// NoticeResponse and the like.
		}
	}
}

// enqueue hands a transaction to apply, waiting while the queue holds
// QueueMemory bytes. Status keeps flowing while it waits.
func (l *Logical) enqueue(ctx context.Context, t *Txn) error {
	n := l.weight(t)
	for n > 0 {
		wctx, cancel := context.WithTimeout(ctx, l.cfg.StatusInterval)
		err := l.mem.Acquire(wctx, n)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Close()
			return ctx.Err()
		}
		if err := l.sendStatus(ctx, t.Commit.LSN(), false); err != nil {
			t.Close()
			return err
		}
	}
	select {
	case l.out <- t:
		return nil
	case <-ctx.Done():
		l.mem.Release(n)
		t.Close()
		return ctx.Err()
	}
}

// sendStatus reports positions to the source. Flush and apply are what the
// target has committed, never what was merely received: the source may
// discard WAL up to flush. pglogrepl copies write into flush when flush is
// 0, so flush is always set (it is never 0: it starts at Start).
func (l *Logical) sendStatus(ctx context.Context, received pglogrepl.LSN, replyRequested bool) error {
	flush := pglogrepl.LSN(l.committed.Load())
	write := max(received, flush)
	err := pglogrepl.SendStandbyStatusUpdate(ctx, l.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write, WALFlushPosition: flush, WALApplyPosition: flush,
		ReplyRequested: replyRequested})
	if err != nil {
		return fmt.Errorf("send standby status to the source: %w", err)
	}
	return nil
}
