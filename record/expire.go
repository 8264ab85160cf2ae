package record

import (
	"time"

	"ipnd/ipn"
)

// Due is an event parked by notification ID at At, in the parked events'
// expiry schedule (see Tx.ParkedDue).
type Due struct {
	ID uint64
	At time.Time
}

// ExpireParked fails, in tx, the events that have waited longer than
// parkFor at now, up to max of them, oldest first (see ipn.ExpireParked):
// each leaves the orphans, its fact key is released (a later copy naming
// its order is applied), its notification is failed with the reason and
// the merchant's alert is queued. A completed payment parked with Own
// (waiting for the event that names its order, which never came) becomes
// an order of its own instead (ownAtExpiry). An event adopted or
// replayed meanwhile is left to what adopted or replays it. It returns
// how many it failed or made orders of.
func ExpireParked(tx Tx, parkFor time.Duration, max int, now time.Time) (int, error) {
	due, err := tx.ParkedDue(now.Add(-parkFor), max)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range due {
		gateway, o, err := tx.TakeDue(d)
		if err != nil {
			return n, err
		}
		if o == nil {
			continue // adopted meanwhile
		}
		if err := tx.Unpark(gateway, o.ID, o.Parked); err != nil {
			return n, err
		}
		w := o.Parked
		if own := w.OwnOrder(gateway); own != "" {
			p, err := tx.State(o.ID)
			if err != nil {
				return n, err
			}
			if p == nil || p.State != ipn.StateApplied {
				continue // replayed meanwhile: the pipeline decides it again
			}
			if err := ownAtExpiry(tx, gateway, own, o.ID, w, parkFor, now); err != nil {
				return n, err
			}
			n++
			continue
		}
		if w.EventKey != "" {
			holder, err := tx.FactHolder(w.EventKey)
			if err != nil {
				return n, err
			}
			if holder == o.ID {
				if err := tx.ReleaseFact(w.EventKey); err != nil {
					return n, err
				}
			}
		}
		p, err := tx.State(o.ID)
		if err != nil {
			return n, err
		}
		if p == nil || p.State != ipn.StateApplied {
			continue // replayed meanwhile: the pipeline decides it again
		}
		next, effects := ipn.ExpireParked(p, o.ID, w, parkFor, now)
		if err := tx.PutState(o.ID, &next); err != nil {
			return n, err
		}
		if err := tx.Enqueue(effects, o.ID, now); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ownAtExpiry makes the parked payment id (w) of gateway the order of
// its own, own, as if it had named none when it came (ipn.OwnOrderID):
// applied with its effects, its references linked to the order and the
// events parked under them adopted. It keeps its fact key.
func ownAtExpiry(tx Tx, gateway, own string, id uint64, w ipn.Parked, parkFor time.Duration, now time.Time) error {
	ev, ac := ipn.AdoptEvent(own, id, gateway, w, now)
	cur, st, err := tx.OrderState(own, ev, ac)
	if err != nil {
		return err
	}
	var next ipn.Order
	var write *ipn.OrderWrite
	var effects []ipn.Effect
	if st != nil {
		next, write, effects = ipn.ApplyState(cur, st, ev, ac)
	} else {
		next, effects = ipn.Apply(cur, ev, ac)
	}
	if next.ID == "" {
		return nil
	}
	if effects, err = tx.Fulfil(cur, &next, write, ev, effects, now); err != nil { // SPEC §11
		return err
	}
	if err := tx.PutOrder(cur, &next, st, write); err != nil {
		return err
	}
	if err := tx.Enqueue(effects, id, now); err != nil {
		return err
	}
	if ipn.IsSubscriptionEvent(ev) {
		if err := tx.PutSubscription(ev, ac); err != nil {
			return err
		}
	}
	if err := NoteAdopted(tx, id, own, ev, ipn.OwnAtExpiry(own, parkFor), now); err != nil {
		return err
	}
	_, err = Attach(tx, gateway, &next, ev.PaymentRefs(), now)
	return err
}
