package pg

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
)

// checkOutboxCounts fails t when the outbox counts the dashboard reads
// (outbox_counts, moved by the transactions) are not the items' counted
// from the outbox table itself.
func checkOutboxCounts(t testing.TB, db *DB) {
	t.Helper()
	got, err := db.Dashboard().OutboxCounts()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]int{}
	rows, err := db.pool.Query(context.Background(), `SELECT state, kind, count(*) FROM outbox GROUP BY state, kind`)
	if err != nil {
		t.Fatal(err)
	}
	var state, kind string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&state, &kind, &n}, func() error {
		if want[state] == nil {
			want[state] = map[string]int{}
		}
		want[state][kind] = n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outbox counts %v, the outbox holds %v", got, want)
	}
	if len(want) == 0 {
		t.Error("the outbox is empty: the counts were not checked")
	}
}

// TestPGDueSkippingPastThePage: DueLaneSkipping reads a small first page
// and more only while skip passes over what it read; with many items
// passed over (more than the first page holds) each backend returns the
// same items, earliest first, and says the lane has more due now.
func TestPGDueSkippingPastThePage(t *testing.T) {
	c := pgtest.Start(t)
	scenario := func(b *backend) string {
		queue(t, b, 90)
		d := b.deliveries()
		var out strings.Builder
		now := time.Now()
		for _, skipped := range []int{0, 3, 40, 85, 89, 90} {
			for _, kind := range []string{ipn.EffectShopCallback, ipn.EffectEmailCustomer} {
				all, _, err := d.DueLaneSkipping(kind, now, 1000, nil)
				if err != nil || len(all) != 90 {
					t.Fatalf("%s %s: %d due %v", b.name, kind, len(all), err)
				}
				passed := map[uint64]bool{}
				for _, it := range all[:skipped] {
					passed[it.ID] = true
				}
				items, next, err := d.DueLaneSkipping(kind, now, 5, func(id uint64) bool { return passed[id] })
				var got []string
				for _, it := range items {
					got = append(got, it.Effect.OrderID)
				}
				fmt.Fprintf(&out, "%s skipping %d: %v more=%v %v\n", kind, skipped, got, !next.IsZero() && !next.After(now), err)
			}
		}
		return out.String()
	}
	want := scenario(boltBackend(t))
	got := scenario(pgBackend(t, open(t, c.DSN())))
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	if !strings.Contains(want, "shop_callback skipping 40: [O40 O41 O42 O43 O44] more=true") ||
		!strings.Contains(want, "shop_callback skipping 89: [O89] more=false") {
		t.Errorf("the scenario does not reach its cases:\n%s", want)
	}
	t.Logf("both backends:\n%s", want)
}

// BenchmarkPGOutboxCounts: the outbox counts the metrics read with
// 120,000 items in the outbox (mostly sent), from outbox_counts ("table")
// and as they were read before, counting the outbox ("count").
func BenchmarkPGOutboxCounts(b *testing.B) {
	db := open(b, pgtest.Start(b).DSN())
	ctx := context.Background()
	if _, err := db.pool.Exec(ctx, `INSERT INTO outbox (id, kind, order_id, cause, notification, effect, delivery_id, created_at, state)
		SELECT i, (ARRAY['email_customer', 'shop_callback'])[1 + i % 2], ('O' || i / 2)::bytea, ('c' || i)::bytea, i / 2, '{}',
			'd' || i, now(), CASE WHEN i % 100 = 0 THEN 'dead' WHEN i % 50 = 0 THEN 'pending' ELSE 'sent' END
		FROM generate_series(1, 120000) AS i;
		DELETE FROM outbox_counts;
		INSERT INTO outbox_counts SELECT state, kind, count(*) FROM outbox GROUP BY 1, 2;
		ANALYZE outbox`); err != nil {
		b.Fatal(err)
	}
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			if _, err := db.Dashboard().OutboxCounts(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("count", func(b *testing.B) {
		for b.Loop() {
			rows, err := db.pool.Query(ctx, `SELECT state, kind, count(*) FROM outbox GROUP BY state, kind`)
			if err != nil {
				b.Fatal(err)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
