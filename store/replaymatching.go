package store

import (
	"errors"
	"time"
)

// MaxBulkReplay bounds how many notifications one bulk replay schedules.
const MaxBulkReplay = 1000

// Matching returns the ids of the notifications f selects (its Gateway,
// State and Before; its Limit is ignored), newest first, at most max
// (at most MaxBulkReplay); more reports that others match beyond them.
func (db *DB) Matching(f Filter, max int) (ids []uint64, more bool, err error) {
	return MatchingVia(db.Find, f, max)
}

// MatchingVia is Matching over a backend's Find: the pages of find, as
// a bulk replay selects from them.
func MatchingVia(find func(Query) ([]Item, error), f Filter, max int) (ids []uint64, more bool, err error) {
	if max <= 0 || max > MaxBulkReplay {
		max = MaxBulkReplay
	}
	q := Query{Gateway: f.Gateway, State: f.State, Before: f.Before, Limit: 1000} // through the indexes (index.go)
	for {
		items, err := find(q)
		if err != nil {
			return nil, false, err
		}
		for _, it := range items {
			if len(ids) == max {
				return ids, true, nil
			}
			ids = append(ids, it.Notification.ID)
		}
		if len(items) < q.Limit {
			return ids, false, nil
		}
		q.Before = items[len(items)-1].Notification.ID
	}
}

// ReplayMatching schedules for replay (Replay) the notifications f
// selects, newest first, at most max (at most MaxBulkReplay): the admin
// API's and the dashboard's bulk replay. It returns the ids scheduled,
// how many were skipped (their body purged, or gone meanwhile) and
// whether more matched beyond max.
func (db *DB) ReplayMatching(f Filter, max int, now time.Time) (replayed []uint64, skipped int, more bool, err error) {
	return ReplayMatchingVia(db.Matching, db.Replay, f, max, now)
}

// ReplayMatchingVia is ReplayMatching over a backend's Matching and
// Replay.
func ReplayMatchingVia(matching func(Filter, int) ([]uint64, bool, error), replay func(uint64, time.Time) error,
	f Filter, max int, now time.Time) (replayed []uint64, skipped int, more bool, err error) {
	ids, more, err := matching(f, max)
	if err != nil {
		return nil, 0, false, err
	}
	for _, id := range ids {
		switch err := replay(id, now); {
		case err == nil:
			replayed = append(replayed, id)
		case errors.Is(err, ErrPurged), errors.Is(err, ErrNotFound), errors.Is(err, ErrLost):
			skipped++
		default:
			return replayed, skipped, more, err
		}
	}
	return replayed, skipped, more, nil
}
