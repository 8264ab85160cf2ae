package record

import (
	"time"

	"ipnd/ipn"
)

// Attach maps the payment references refs of gateway to order o (a
// reference already mapped keeps its order) and applies to o, in tx, the
// events parked under any of them (ipn.AdoptState), and those parked
// under the references these bring in turn: each leaves the orphans,
// its order change, deliveries, effects and subscription are written and
// its notification's history says it reached its order. It returns the
// order as it stands after them (o itself when there were none).
func Attach(tx Tx, gateway string, o *ipn.Order, refs []string, now time.Time) (*ipn.Order, error) {
	queue := refs
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		if err := tx.LinkRef(gateway, r, o.ID); err != nil {
			return nil, err
		}
		found, err := tx.Orphans(gateway, r)
		if err != nil {
			return nil, err
		}
		for _, p := range found {
			// Every reference it was parked under is settled now.
			if err := tx.Unpark(gateway, p.ID, p.Parked); err != nil {
				return nil, err
			}
			ev, ac := ipn.AdoptEvent(o.ID, p.ID, gateway, p.Parked, now)
			cur, st, err := tx.OrderState(o.ID, ev, ac)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				cur = o
			}
			a := ipn.AdoptState(cur, st, p.ID, gateway, p.Parked, now)
			if a.Effects, err = tx.Fulfil(cur, &a.Order, a.Write, a.Event, a.Effects, now); err != nil { // SPEC §11
				return nil, err
			}
			if err := tx.PutOrder(cur, &a.Order, st, a.Write); err != nil {
				return nil, err
			}
			if err := tx.Enqueue(a.Effects, p.ID, now); err != nil {
				return nil, err
			}
			if a.Subscription {
				if err := tx.PutSubscription(a.Event, a.Context); err != nil {
					return nil, err
				}
			}
			if err := NoteAdopted(tx, p.ID, o.ID, a.Event, a.Detail, now); err != nil {
				return nil, err
			}
			o = &a.Order
			queue = append(queue, a.Event.PaymentRefs()...)
		}
	}
	return o, nil
}

// NoteAdopted records in the history of parked notification id that its
// event ev reached order orderID (detail says how). A notification with
// no processing record is left alone.
func NoteAdopted(tx Tx, id uint64, orderID string, ev *ipn.Event, detail string, now time.Time) error {
	p, err := tx.State(id)
	if err != nil || p == nil {
		return err
	}
	if p.Event != nil {
		p.Event.OrderID = orderID
		p.Event.Amount = ev.Amount // a refund's own amount, known now
	}
	p.History = append(p.History, ipn.HistoryEntry{At: now.UTC(), State: p.State, Detail: detail})
	return tx.PutState(id, p)
}
