package store

import (
	"fmt"
	"time"

	"ipnd/ipn"
)

// Prefill adds n notifications to the database at path (made if it does
// not exist) as if ipnd had received and processed them, for benchmarks
// that measure a large store (BenchmarkE2E with IPND_E2E_PREFILL). gen
// returns the notification with log id id and the outcome the pipeline
// would record for it. They go, PrefillBatch at a time, through the
// applier's write path (log and dedup, as the journal's records do) and
// the pipeline's (Finish: state, history, event keys, orders), with the
// cursor moved past them, but with bbolt's fsync off and no outbox item
// queued (these payments' emails and callbacks are not sent again).
// progress, when set, is called after each batch with the ids written.
//
// Not for a live database: ipnd must not be running (Open's lock
// refuses), and a crash during Prefill can leave the file damaged.
func Prefill(path string, n int, gen func(id uint64) (*ipn.Notification, ipn.Outcome), progress func(done int)) error {
	db, err := Open(path, Options{EffectKinds: map[string]bool{}})
	if err != nil {
		return err
	}
	db.bolt.NoSync = true
	db.settle()
	first := db.acked + 1
	for done := 0; done < n; {
		k := min(PrefillBatch, n-done)
		recs := make([]journaled, k)
		outs := make([]ipn.Outcome, k)
		var at time.Time
		for i := range k {
			id := first + uint64(done+i)
			nt, o := gen(id)
			nt.ID, o.ID = id, id
			recs[i] = journaled{id: id, key: dedupKey(nt.Gateway, nt.DedupKey), rec: plainRecord(nt)}
			outs[i], at = o, nt.ReceivedAt
		}
		if err := db.putJournaled(recs); err != nil {
			db.Close()
			return err
		}
		last := recs[k-1].id
		db.amu.Lock()
		db.acked, db.applied = last, last
		db.amu.Unlock()
		if _, err := db.Finish(outs, last, at); err != nil {
			db.Close()
			return fmt.Errorf("store: prefill: %w", err)
		}
		done += k
		if progress != nil {
			progress(done)
		}
	}
	db.bolt.NoSync = false
	if err := db.bolt.Sync(); err != nil {
		db.Close()
		return err
	}
	return db.Close()
}

// PrefillBatch is how many notifications Prefill writes per transaction.
const PrefillBatch = 5000
