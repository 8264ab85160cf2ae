package pg

import (
	"context"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
)

// BenchmarkPGDueLane: the outbox worker's query for due items of the
// ordered callback lane with 20,000 callbacks due (each of its own order),
// 4 in flight (skipped) and 1 slot free, as the worker asks while a
// backlog drains.
func BenchmarkPGDueLane(b *testing.B) {
	db := open(b, pgtest.Start(b).DSN())
	ctx := context.Background()
	if _, err := db.pool.Exec(ctx, `INSERT INTO outbox (id, kind, order_id, cause, notification, effect, delivery_id, created_at, state, next_attempt)
		SELECT i, 'shop_callback', ('O' || i)::bytea, ('c' || i)::bytea, i, '{"kind":"shop_callback"}',
			'd' || i, now(), 'pending', now() - interval '1 hour' + i * interval '1 ms'
		FROM generate_series(1, 20000) AS i;
		ANALYZE outbox`); err != nil {
		b.Fatal(err)
	}
	d := pgBackend(b, db).deliveries()
	inflight := func(id uint64) bool { return id <= 4 }
	for b.Loop() {
		items, _, err := d.DueLaneSkipping(ipn.EffectShopCallback, time.Now(), 1, inflight)
		if err != nil || len(items) != 1 || items[0].ID != 5 {
			b.Fatalf("due: %+v %v", items, err)
		}
	}
}
