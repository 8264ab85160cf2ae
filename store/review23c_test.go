package store

import (
	"math"
	"reflect"
	"testing"

	"ipnd/ipn"
)

// Every int an outbox item holds reads back from the binary layout,
// whatever its size: a CoinPayments IPN's received_confirms is any int
// (strconv.Atoi), and an item written but refused on reading is lost.
func TestReview23cOutboxBodyIntRange(t *testing.T) {
	for _, v := range []int{math.MaxInt32 + 1, math.MaxInt64, math.MinInt32 - 1, math.MinInt64} {
		it := ipn.OutboxItem{ID: 1, State: ipn.OutboxPending, Effect: ipn.Effect{Kind: ipn.EffectShopCallback,
			Event: &ipn.Event{Confirmations: v},
			Order: &ipn.OrderSnapshot{Version: v, Deliveries: []ipn.Delivered{{DownloadsLeft: v}}}}}
		var got ipn.OutboxItem
		if err := decodeOutboxBody(outboxBody(&it), &got); err != nil || !reflect.DeepEqual(got, it) {
			t.Errorf("ints %d: read %+v, %v", v, got, err)
		}
	}
}
