package redissync

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"replicator/pkg/redisrdb"
)

// LoadStats counts what a load did.
type LoadStats struct {
	Keys           int64 // keys written
	Restored       int64 // of which by RESTORE
	Strings        int64 // of which strings by one SET
	Native         int64 // of which by other native commands
	SkippedExpired int64
	SkippedEmpty   int64
	Functions      int64
	Bytes          int64 // RDB bytes read
	// ExpiredFields counts hash fields not written because their own TTL
	// had passed (Redis does not load them either).
	ExpiredFields int64
	// DuplicateKeys counts key records of an RDB file that repeated an
	// earlier key (loaded with DuplicatesLast).
	DuplicateKeys int64
	// DroppedFieldTTLs counts hash field TTLs dropped (HashFieldTTL drop,
	// target without HPEXPIREAT): those fields are permanent on the target.
	DroppedFieldTTLs int64
}

// loader drives a Decoder into a Writer. For each key it decides between
// RESTORE of the raw value bytes (when the target reads that encoding and
// the value fits in BigKeyBytes) and native commands in pieces.
type loader struct {
	w           *Writer
	log         *zap.Logger
	bigKeyBytes int64
	now         func() int64
	stats       LoadStats

	// current key
	skip       bool
	native     bool
	restorable bool
	db         int
	key        []byte
	expireAt   int64
	nb         nativeBuilder
	pending    []redisrdb.Event // copies of the key's events while RESTORE is still possible
	pendBytes  int64
	// nbuf holds the key's native commands until they fill a job of
	// nativeJobBytes or the key ends; txOpen: a job of the key was sent,
	// opening its transaction on the target.
	nbuf      []command
	nbufBytes int64
	txOpen    bool
	noKey     bool // the key ends up absent: its last job is not a key written
	// rawComplete: the whole value is already captured (a string, or a
	// single compact blob), so RESTORE is certain and nothing is kept.
	rawComplete bool
	// set: the key is a string written by one SET of this value.
	set []byte
}

// Events is what the loader pulls decoded RDB events from: the boundary
// between the format (package redisrdb, whose *Decoder implements it) and
// the sync.
//
//   - Next advances to the next event and reports whether there is one. It
//     returns false at the end of the input and at the first error, and
//     keeps returning false after that.
//   - Event is the current event. It and every slice it holds belong to the
//     source and are valid only until the next call to Next; the loader
//     copies what it keeps. KeyEnd's Raw is the exception: it is the
//     loader's, which appends the DUMP trailer to it.
//   - Capturing reports whether the current value's raw bytes are still
//     being kept, so that its KeyEnd event will carry them in Raw; once it
//     turns false for a value it stays false until the next KeyStart.
//   - Offset is the number of input bytes consumed so far.
//   - Err is nil after a clean end, else the error that stopped Next.
type Events interface {
	Next() bool
	Event() *redisrdb.Event
	Capturing() bool
	Offset() int64
	Err() error
}

// stringCapturer is an Events source that can be told not to capture
// string values (redisrdb.Decoder.CaptureStrings).
type stringCapturer interface{ CaptureStrings(on bool) }

var (
	_ Events         = (*redisrdb.Decoder)(nil)
	_ stringCapturer = (*redisrdb.Decoder)(nil)
)

// Load reads d to the end and writes every key to w. It returns when
// everything is read and queued; call w.Flush to wait for the writes.
func Load(ctx context.Context, d Events, w *Writer, bigKeyBytes int64, log *zap.Logger) (st LoadStats, err error) {
	l := &loader{w: w, log: log, bigKeyBytes: bigKeyBytes, now: func() int64 { return time.Now().UnixMilli() }}
	l.nb = *w.builder(0)
	l.nb.now = l.now
	if sc, ok := d.(stringCapturer); ok && w.pxat {
		// Every string goes by SET (setsStrings, or natively when larger
		// than bigKeyBytes): their raw bytes would be copied for nothing.
		sc.CaptureStrings(false)
	}
	defer func() { st.ExpiredFields = l.nb.expiredFields }()
	last := time.Now()
	for n := 0; d.Next(); n++ {
		if err := l.event(ctx, d, d.Event()); err != nil {
			return l.stats, err
		}
		if n%4096 == 0 && time.Since(last) > 10*time.Second {
			last = time.Now()
			log.Info("snapshot progress", zap.Int64("keys", l.stats.Keys), zap.Int64("rdb_bytes", d.Offset()))
		}
	}
	l.stats.Bytes = d.Offset()
	if err := d.Err(); err != nil {
		return l.stats, err
	}
	return l.stats, nil
}

func (l *loader) event(ctx context.Context, d Events, ev *redisrdb.Event) error {
	switch ev.Kind {
	case redisrdb.KindFunction:
		l.stats.Functions++
		if err := l.w.Do(ctx, 0, "FUNCTION", "LOAD", "REPLACE", ev.Value); err != nil {
			return fmt.Errorf("target: FUNCTION LOAD of a library from the source: %w", err)
		}
		return nil
	case redisrdb.KindModuleAux:
		l.log.Warn("source has auxiliary data of a Redis module; it is not copied", zap.String("module", ev.Module))
		return nil
	case redisrdb.KindKeyStart:
		return l.start(ctx, d, ev)
	case redisrdb.KindKeyEnd:
		return l.end(ctx, ev)
	case redisrdb.KindAux, redisrdb.KindSelectDB:
		return nil
	}
	// Items and stream events.
	if l.skip {
		return nil
	}
	if l.native {
		cmds, err := l.nativeCmds(ev)
		if err != nil {
			return err
		}
		return l.sendNative(ctx, cmds, false)
	}
	if ev.Kind == redisrdb.KindItems && singleBlob(ev.Encoding) && d.Capturing() {
		l.rawComplete, l.pending, l.pendBytes = true, l.pending[:0], 0
	}
	if l.rawComplete {
		return nil
	}
	l.pending = append(l.pending, cloneEvent(ev))
	l.pendBytes += eventBytes(ev)
	if l.pendBytes > l.bigKeyBytes || !d.Capturing() {
		return l.goNative(ctx)
	}
	return nil
}

func (l *loader) start(ctx context.Context, d Events, ev *redisrdb.Event) error {
	l.skip, l.native, l.pending, l.pendBytes, l.rawComplete = false, false, l.pending[:0], 0, false
	l.nbuf, l.nbufBytes, l.txOpen, l.noKey = l.nbuf[:0], 0, false, false
	l.db, l.key, l.expireAt = ev.DB, append([]byte(nil), ev.Key...), ev.ExpireAt
	if ev.ExpireAt != 0 && ev.ExpireAt <= l.now() {
		// Expired on the source means absent: delete a copy a previous
		// run may have left on the target.
		l.skip = true
		l.stats.SkippedExpired++
		return l.submitNow(ctx, command{"DEL", l.key})
	}
	l.set = nil
	if ev.Type == redisrdb.TypeString && int64(len(ev.Value)) <= l.bigKeyBytes && l.w.setsStrings(ev.ExpireAt) {
		// SET key value [PXAT ms] leaves on the target what RESTORE of the
		// string would (the value's bytes, its absolute expiry, any older
		// key of any type replaced), at a fraction of its cost there: no
		// payload checksum, no RDB decoding. Nothing of the DUMP payload
		// is built either.
		l.set = append(make([]byte, 0, len(ev.Value)), ev.Value...)
		l.rawComplete = true
		return nil
	}
	l.restorable = redisrdb.MinVersion(ev.Encoding) <= l.w.TargetVersion()
	if l.restorable && ev.Type == redisrdb.TypeString && d.Capturing() {
		l.rawComplete = true // the value was read with the key
		return nil
	}
	l.pending = append(l.pending, l.cloneStart(ev))
	if !l.restorable || int64(len(ev.Value)) > l.bigKeyBytes {
		return l.goNative(ctx)
	}
	return nil
}

// singleBlob reports encodings whose whole value is one string read before
// the first member is emitted.
func singleBlob(enc byte) bool {
	switch enc {
	case redisrdb.TypeByteHashZipmap, redisrdb.TypeByteListZiplist, redisrdb.TypeByteSetIntset, redisrdb.TypeByteZSetZiplist, redisrdb.TypeByteHashZiplist,
		redisrdb.TypeByteHashListpack, redisrdb.TypeByteZSetListpack, redisrdb.TypeByteSetListpack, redisrdb.TypeByteHashListpackEx, redisrdb.TypeByteHashListpackExPreGA:
		return true
	}
	return false
}

// goNative switches the current key to native commands, replaying what
// was held back.
func (l *loader) goNative(ctx context.Context) error {
	l.native = true
	for i := range l.pending {
		cmds, err := l.nativeCmds(&l.pending[i])
		if err != nil {
			return err
		}
		if err := l.sendNative(ctx, cmds, false); err != nil {
			return err
		}
	}
	l.pending, l.pendBytes = l.pending[:0], 0
	return nil
}

func (l *loader) nativeCmds(ev *redisrdb.Event) ([]command, error) {
	switch ev.Kind {
	case redisrdb.KindKeyStart:
		return l.nb.start(ev), nil
	case redisrdb.KindItems:
		return l.nb.items(ev.Items)
	}
	return l.nb.stream(ev), nil
}

// nativeJobBytes is the most native command bytes of one key held before
// they are sent: a small key goes in one job (one MULTI/EXEC in the
// pipeline), a large one in several jobs of one transaction.
const nativeJobBytes = 1 << 20

// sendNative queues native commands of the current key; done sends the
// rest and closes the key's transaction. A refusal before done leaves the
// transaction open, and the writer discards it: nothing of the key shows.
func (l *loader) sendNative(ctx context.Context, cmds []command, done bool) error {
	for _, c := range cmds {
		l.nbuf = append(l.nbuf, c)
		l.nbufBytes += cmdBytes(c)
	}
	if !done && l.nbufBytes < nativeJobBytes {
		return nil
	}
	j := &job{db: l.db, key: l.key, cmds: l.nbuf, bytes: l.nbufBytes, keyDone: done, txStart: !l.txOpen, noKey: l.noKey}
	l.nbuf, l.nbufBytes, l.txOpen = nil, 0, true // the job owns the commands now
	return l.w.submit(ctx, j)
}

// submitNow sends one command of a key that is not written (expired,
// empty), outside any transaction.
func (l *loader) submitNow(ctx context.Context, c command) error {
	return l.w.submit(ctx, &job{db: l.db, key: l.key, cmds: []command{c}, bytes: cmdBytes(c)})
}

func (l *loader) end(ctx context.Context, ev *redisrdb.Event) error {
	if l.skip {
		return nil
	}
	if ev.Count == 0 && ev.Type != redisrdb.TypeString && ev.Type != redisrdb.TypeStream {
		// Redis refuses empty collections (and drops them when loading).
		l.stats.SkippedEmpty++
		l.pending = l.pending[:0]
		if l.txOpen {
			l.nbuf, l.nbufBytes, l.noKey = l.nbuf[:0], 0, true
			return l.sendNative(ctx, []command{{"DEL", l.key}}, true)
		}
		return l.submitNow(ctx, command{"DEL", l.key})
	}
	l.stats.Keys++
	if l.set != nil {
		l.stats.Strings++
		cmd := command{"SET", l.key, l.set}
		if l.expireAt != 0 {
			cmd = append(cmd, "PXAT", l.expireAt)
		}
		j := &job{db: l.db, key: l.key, cmds: []command{cmd}, bytes: int64(len(l.key) + len(l.set)), keyDone: true}
		l.set = nil // the job owns it
		return l.w.submit(ctx, j)
	}
	if !l.native && ev.Raw != nil {
		l.stats.Restored++
		payload := redisrdb.AppendDump(ev.Raw, l.w.TargetVersion()) // Raw is ours: no copy
		l.pending = l.pending[:0]
		return l.w.submit(ctx, &job{db: l.db, key: l.key, restore: true, payload: payload, expireAt: l.expireAt,
			cmds:  []command{{"RESTORE", l.key, l.expireAt, payload, "ABSTTL", "REPLACE"}},
			bytes: int64(len(payload)), keyDone: true})
	}
	if l.rawComplete {
		return fmt.Errorf("internal error: value of %q was captured but its bytes are missing", l.key)
	}
	if !l.native {
		if err := l.goNative(ctx); err != nil {
			return err
		}
	}
	if ev.Type == redisrdb.TypeHash && l.nb.fields == 0 {
		// Every field had expired: Redis would not load the key. Close
		// the transaction (its DEL removes an older copy) and count none.
		l.stats.Keys--
		l.stats.SkippedExpired++
		l.noKey = true
		return l.sendNative(ctx, nil, true)
	}
	l.stats.Native++
	return l.sendNative(ctx, l.nb.end(), true)
}

// cloneStart is cloneEvent for the current key's KeyStart, which shares
// the key's copy already made in l.key (read only from here on).
func (l *loader) cloneStart(ev *redisrdb.Event) redisrdb.Event {
	if len(ev.Items) > 0 || len(ev.Pending) > 0 || len(ev.IDs) > 0 || len(ev.Group.Name) > 0 || len(ev.Consumer.Name) > 0 {
		return cloneEvent(ev)
	}
	c := *ev
	c.Key, c.Raw, c.Items, c.Pending, c.IDs = l.key, nil, nil, nil, nil
	if ev.Value != nil {
		c.Value = append([]byte(nil), ev.Value...)
	}
	return c
}

func cloneEvent(ev *redisrdb.Event) redisrdb.Event {
	c := *ev
	c.Key = append([]byte(nil), ev.Key...)
	c.Value = append([]byte(nil), ev.Value...)
	c.Raw = nil
	c.Items = make([]redisrdb.Item, len(ev.Items))
	for i, it := range ev.Items {
		it.Member = append([]byte(nil), it.Member...)
		it.Value = append([]byte(nil), it.Value...)
		if it.Fields != nil {
			f := make([][]byte, len(it.Fields))
			for k, b := range it.Fields {
				f[k] = append([]byte(nil), b...)
			}
			it.Fields = f
		}
		c.Items[i] = it
	}
	c.Pending = append([]redisrdb.PendingEntry(nil), ev.Pending...)
	c.IDs = append([]redisrdb.StreamID(nil), ev.IDs...)
	c.Group.Name = append([]byte(nil), ev.Group.Name...)
	c.Consumer.Name = append([]byte(nil), ev.Consumer.Name...)
	return c
}

func eventBytes(ev *redisrdb.Event) int64 {
	n := int64(len(ev.Value)) + 32*int64(len(ev.Pending)+len(ev.IDs))
	for _, it := range ev.Items {
		n += int64(len(it.Member)+len(it.Value)) + 32
		for _, f := range it.Fields {
			n += int64(len(f))
		}
	}
	return n
}

func cmdBytes(c command) int64 {
	var n int64
	for _, a := range c {
		switch v := a.(type) {
		case []byte:
			n += int64(len(v))
		case string:
			n += int64(len(v))
		default:
			n += 8
		}
	}
	return n
}
