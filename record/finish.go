package record

import (
	"errors"
	"strings"
	"time"

	"ipnd/ipn"
)

// Update runs fn in one read-write transaction of a store and commits
// it when fn returns nil (the bbolt store's Update, a PostgreSQL
// transaction). Nothing fn wrote is kept when it fails.
type Update func(fn func(Tx) error) error

// Finish records the outcomes of a batch of notifications in one
// transaction that update runs, and moves the cursor to cursor (when
// that is further). For each outcome it looks up what ipn.Decide reads,
// and writes what it decided: state, history entry, event, retry
// schedule, and the fact key that makes a later copy of the same payment
// fact a duplicate. A notification already final (processed before a
// crash) is left as it is. It returns the state recorded for each
// outcome, and how many were recorded as failed because a record they
// read does not decode (ipn.Unreadable): the transaction is run again
// without such a record read (at most len(outs)+1 runs).
func Finish(update Update, outs []ipn.Outcome, cursor uint64, now time.Time) ([]ipn.Recorded, int, error) {
	return FinishThen(update, outs, cursor, now, nil)
}

// FinishThen is Finish, calling then (when not nil) last in the
// transaction with the states recorded, so that what it writes commits
// with them (the PostgreSQL store's NOTIFY of the live events).
func FinishThen(update Update, outs []ipn.Outcome, cursor uint64, now time.Time, then func(Tx, []ipn.Recorded) error) ([]ipn.Recorded, int, error) {
	states := make([]ipn.Recorded, len(outs))
	// damaged[i]: outcome i reads a record that does not decode.
	damaged := map[int]error{}
	for {
		var bad *damagedOutcome
		err := update(func(tx Tx) error {
			for i, o := range outs {
				var st ipn.Recorded
				var err error
				if cause, ok := damaged[i]; ok {
					st, err = Damaged(tx, o, cause, now)
				} else if st, err = One(tx, o, now); errors.Is(err, ipn.ErrCorrupt) {
					bad = &damagedOutcome{i, err}
					return err
				}
				if err != nil {
					return err
				}
				states[i] = st
			}
			if err := tx.MoveCursor(cursor); err != nil || then == nil {
				return err
			}
			return then(tx, states)
		})
		if bad != nil {
			damaged[bad.i] = bad.err
			continue
		}
		return states, len(damaged), err
	}
}

type damagedOutcome struct {
	i   int
	err error
}

// One records outcome o in tx: it looks up what the decision reads,
// lets ipn.Decide decide and writes the decision. It fails with
// ipn.ErrCorrupt when a record the decision reads does not decode.
func One(tx Tx, o ipn.Outcome, now time.Time) (ipn.Recorded, error) {
	s, err := lookup(tx, o)
	if err != nil {
		return ipn.Recorded{}, err
	}
	d := ipn.Decide(o, s, now)
	if d.AlreadyFinal {
		return d.Recorded, nil
	}
	return write(tx, o, s, d, now)
}

// Damaged records outcome o as failed for cause, a record it reads that
// does not decode (ipn.ErrCorrupt). A processing record that does not
// decode itself is replaced, and the retries of o are dropped.
func Damaged(tx Tx, o ipn.Outcome, cause error, now time.Time) (ipn.Recorded, error) {
	n, err := tx.Notification(o.ID)
	if errors.Is(err, ipn.ErrCorrupt) {
		n, err = &ipn.Notification{ID: o.ID}, nil // the raw record itself is damaged
	}
	if err != nil {
		return ipn.Recorded{}, err
	}
	p, err := processing(tx, n)
	if errors.Is(err, ipn.ErrCorrupt) {
		// Its retry schedule is unknown too: drop any retry of it, or the
		// failed notification would be due again and again.
		p, err = Received(n), tx.DropRetries(o.ID)
	}
	if err != nil {
		return ipn.Recorded{}, err
	}
	d := ipn.Unreadable(o, p, strings.TrimPrefix(cause.Error(), ipn.ErrCorrupt.Error()+": "), now)
	if d.AlreadyFinal {
		return d.Recorded, nil
	}
	return write(tx, o, ipn.Stored{Processing: p}, d, now)
}

// lookup reads what ipn.Decide needs to know about o.
func lookup(tx Reader, o ipn.Outcome) (ipn.Stored, error) {
	var s ipn.Stored
	n, err := tx.Notification(o.ID)
	if err != nil {
		return s, err
	}
	if s.Processing, err = processing(tx, n); err != nil || s.Processing.State.Final() {
		return s, err
	}
	// Only what the decision can read is read: a damaged record that
	// does not matter to o does not fail it.
	if o.Event != nil {
		if s.RefOrder, err = tx.FindRef(o.Context.Gateway, o.Event.PaymentRefs()); err != nil {
			return s, err
		}
	}
	if o.State == ipn.StateApplied && o.EventKey != "" {
		if s.FirstOfFact, err = tx.FactHolder(o.EventKey); err != nil {
			return s, err
		}
		if s.FirstOfFact != 0 && s.FirstOfFact != o.ID && ipn.TargetOrder(o, s.RefOrder) != "" {
			st, err := tx.State(s.FirstOfFact)
			if err != nil {
				return s, err
			}
			s.FirstNoOrder = st != nil && st.Event != nil && st.Event.OrderID == ""
		}
	}
	if o.ApplyOrder && o.Event != nil {
		if id := ipn.TargetOrder(o, s.RefOrder); id != "" {
			ac := o.Context
			ac.EventKey = o.EventKey
			if s.Order, s.State, err = tx.OrderState(id, o.Event, ac); err != nil {
				return s, err
			}
		}
	}
	return s, nil
}

// write writes decision d about outcome o, looked up as s, in the order
// ipn.Decision names.
func write(tx Tx, o ipn.Outcome, s ipn.Stored, d ipn.Decision, now time.Time) (ipn.Recorded, error) {
	if old := s.Processing.NextAttempt; !old.IsZero() {
		if err := tx.Unschedule(o.ID, old); err != nil {
			return ipn.Recorded{}, err
		}
	}
	if due := d.Processing.NextAttempt; !due.IsZero() {
		if err := tx.Schedule(o.ID, due, retryGateway(tx, o)); err != nil {
			return ipn.Recorded{}, err
		}
	}
	switch d.Fact {
	case ipn.FactClaim:
		if err := tx.ClaimFact(o.EventKey, o.ID, s.FirstOfFact); err != nil {
			return ipn.Recorded{}, err
		}
	case ipn.FactRelease:
		if err := tx.ReleaseFact(o.EventKey); err != nil {
			return ipn.Recorded{}, err
		}
	}
	if d.Order != nil {
		var err error
		if d.Effects, err = tx.Fulfil(s.Order, d.Order, d.Write, d.Event, d.Effects, now); err != nil { // SPEC §11
			return ipn.Recorded{}, err
		}
		d.Recorded.OrderTo = d.Order.Status
		if err := tx.PutOrder(s.Order, d.Order, s.State, d.Write); err != nil {
			return ipn.Recorded{}, err
		}
	}
	if err := tx.Enqueue(d.Effects, o.ID, now); err != nil {
		return ipn.Recorded{}, err
	}
	if d.Subscription {
		if err := tx.PutSubscription(d.Event, d.Context); err != nil {
			return ipn.Recorded{}, err
		}
	}
	if d.Park != nil {
		w := *d.Park
		w.At = now
		if err := tx.Park(d.Context.Gateway, o.ID, w); err != nil {
			return ipn.Recorded{}, err
		}
	}
	rec := d.Recorded
	if d.AttachTo != nil {
		last, err := Attach(tx, o.Context.Gateway, d.AttachTo, d.Refs, now)
		if err != nil {
			return ipn.Recorded{}, err
		}
		if d.Order != nil {
			rec.OrderTo = last.Status // after the events it adopted
		}
	}
	return rec, tx.PutState(o.ID, &d.Processing)
}

// retryGateway is the gateway that outcome o's retry entry names: its
// notification's ("" when the record does not decode).
func retryGateway(tx Reader, o ipn.Outcome) string {
	if o.Context.Gateway != "" {
		return o.Context.Gateway
	}
	if n, err := tx.Notification(o.ID); err == nil {
		return n.Gateway
	}
	return ""
}
