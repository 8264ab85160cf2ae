package pg

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
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
