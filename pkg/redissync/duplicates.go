package redissync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"time"

	"replicator/pkg/redisrdb"
)

// Duplicate-key policies (SyncConfig.DuplicateKeys).
const (
	// DuplicatesRefuse refuses a file in which a key appears twice in one
	// database, before anything is written: Redis refuses to load such a
	// file ("RDB has duplicated key"), so it is damaged or was assembled
	// by hand, and which copy is right is the user's call.
	DuplicatesRefuse = "refuse"
	// DuplicatesLast loads it anyway: each later copy replaces the earlier
	// one, and the duplicates are reported.
	DuplicatesLast = "last"
)

// ErrDuplicateKeys is returned when an RDB file repeats keys and the
// policy is DuplicatesRefuse.
var ErrDuplicateKeys = errors.New("RDB file has duplicated keys")

// Duplicates is what a scan for repeated keys found.
type Duplicates struct {
	// Count is the number of key records that repeat an earlier key of the
	// same database (a key present three times counts two).
	Count int64
	// Examples are a few of the repeated keys, "db 0 key \"k\"".
	Examples []string
}

// keyHash is a 128-bit hash of (db, key): two independent 64-bit maphash
// sums, so that telling keys apart by hash alone is safe for any file
// (a false duplicate needs a 128-bit collision).
type keyHash [2]uint64

type keyHasher struct{ a, b maphash.Seed }

func newKeyHasher() keyHasher { return keyHasher{maphash.MakeSeed(), maphash.MakeSeed()} }

func (h keyHasher) sum(db int, key []byte) keyHash {
	var d [8]byte
	binary.LittleEndian.PutUint64(d[:], uint64(db))
	var x, y maphash.Hash
	x.SetSeed(h.a)
	y.SetSeed(h.b)
	x.Write(d[:])
	x.Write(key)
	y.Write(d[:])
	y.Write(key)
	return keyHash{x.Sum64(), y.Sum64()}
}

// FindDuplicates reads an RDB file to the end, writing nothing, and
// reports the key records that repeat an earlier key of their database.
// It counts the keys Redis would load: expired keys (by now, Unix ms) and
// empty collections are skipped, as Redis skips them before its own
// duplicate check. Memory: 16 bytes a key, plus the decoder's bounds; the
// key names are not kept, so the examples come from a second pass, only
// when there are duplicates.
func FindDuplicates(open func() (io.ReadCloser, error), opts redisrdb.Options, now int64) (Duplicates, error) {
	h := newKeyHasher()
	var sums []keyHash
	err := eachLoadedKey(open, opts, now, func(db int, key []byte) bool {
		sums = append(sums, h.sum(db, key))
		return true
	})
	if err != nil {
		return Duplicates{}, err
	}
	slices.SortFunc(sums, func(p, q keyHash) int {
		if c := cmpU64(p[0], q[0]); c != 0 {
			return c
		}
		return cmpU64(p[1], q[1])
	})
	dup := map[keyHash]bool{}
	var res Duplicates
	for i := 1; i < len(sums); i++ {
		if sums[i] == sums[i-1] {
			res.Count++
			dup[sums[i]] = true
		}
	}
	sums = nil
	if res.Count == 0 {
		return res, nil
	}
	seen := map[keyHash]bool{}
	err = eachLoadedKey(open, opts, now, func(db int, key []byte) bool {
		s := h.sum(db, key)
		if dup[s] && !seen[s] {
			seen[s] = true
			res.Examples = append(res.Examples, fmt.Sprintf("db %d key %q", db, printable(key)))
		}
		return len(res.Examples) < maxExamples
	})
	return res, err
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// eachLoadedKey calls fn for every key of the file that Redis would load,
// until fn returns false.
func eachLoadedKey(open func() (io.ReadCloser, error), opts redisrdb.Options, now int64, fn func(db int, key []byte) bool) error {
	f, err := open()
	if err != nil {
		return err
	}
	defer f.Close()
	opts.CaptureRaw = 0
	d := redisrdb.NewDecoder(f, opts)
	var key []byte
	var db int
	var expired bool
	for d.Next() {
		ev := d.Event()
		switch ev.Kind {
		case redisrdb.KindKeyStart:
			key, db = append(key[:0], ev.Key...), ev.DB
			expired = ev.ExpireAt != 0 && ev.ExpireAt <= now
		case redisrdb.KindKeyEnd:
			empty := ev.Count == 0 && ev.Type != redisrdb.TypeString && ev.Type != redisrdb.TypeStream
			if !expired && !empty && !fn(db, key) {
				return nil
			}
		}
	}
	return d.Err()
}

// checkDuplicates applies the policy to an RDB file before it is loaded.
func checkDuplicates(cfg SyncConfig, open func() (io.ReadCloser, error)) (Duplicates, error) {
	dups, err := FindDuplicates(open, cfg.Decoder, time.Now().UnixMilli())
	if err != nil || dups.Count == 0 {
		return dups, err
	}
	if cfg.DuplicateKeys != DuplicatesLast {
		return dups, fmt.Errorf("%w: %d key records repeat an earlier key of the same database (e.g. %s); Redis refuses to load such a file. "+
			"Nothing was written; pass --duplicate-keys last to load it with the last copy of each key winning",
			ErrDuplicateKeys, dups.Count, dups.Examples[0])
	}
	return dups, nil
}
