package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
)

// mixNotification is notification i of a mix over two gateways: most
// are one completed payment of an order of their own, every 7th is
// unreadable (invalid), every 5th names the same order as the one
// before it (a second payment), customers repeat with the case of
// their emails varying.
func mixNotification(i int, at time.Time) *ipn.Notification {
	gw := []string{"shop", "market", "shop"}[i%3]
	order := fmt.Sprintf("ORD-%05d", i)
	if i%5 == 0 {
		order = fmt.Sprintf("ORD-%05d", i-1)
	}
	amount := "10.00"
	if i%7 == 0 {
		amount = "abc"
	}
	email := fmt.Sprintf("c%d@example.com", i%40)
	if i%2 == 0 {
		email = strings.ToUpper(email)
	}
	body := fmt.Sprintf(`{"type":"payment.completed","data":{"txn_id":"TX-%05d","order_id":"%s","amount":"%s","currency":"EUR","status":"completed","customer_email":"%s"}}`,
		i, order, amount, email)
	return &ipn.Notification{Gateway: gw, ReceivedAt: at, ContentType: "application/json", Body: []byte(body),
		DedupKey: fmt.Sprintf("msg-%d", i)}
}

// mixPipeline runs the real pipeline (two Standard Webhooks gateways)
// on db until ctx ends.
func mixPipeline(t testing.TB, db *DB) (stop func()) {
	t.Helper()
	var gws []gateway.Gateway
	for _, name := range []string{"shop", "market"} {
		g, err := gateway.New(gateway.Config{Name: name, Kind: "standard-webhooks", Secrets: []string{typicalSecret}})
		if err != nil {
			t.Fatal(err)
		}
		gws = append(gws, g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := pipeline.New(pipeline.Options{Journal: db, Gateways: gws, BatchDelay: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	return func() { cancel(); <-ran }
}

// fillMix stores n notifications of the mix (received an hour apart,
// the newest now), in bulk, and waits until the pipeline processed them.
func fillMix(t testing.TB, db *DB, from, n int, now time.Time) {
	t.Helper()
	var batch []*ipn.Notification
	for i := from; i < from+n; i++ {
		batch = append(batch, mixNotification(i, now.Add(-time.Duration(from+n-i)*time.Minute)))
	}
	if err := db.BulkAppend(batch); err != nil {
		t.Fatal(err)
	}
	waitProcessed(t, db)
}

func waitProcessed(t testing.TB, db *DB) {
	t.Helper()
	st, _ := db.Stats()
	for deadline := time.Now().Add(2 * time.Minute); db.Cursor() < st.LastID; {
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline processed %d of %d", db.Cursor(), st.LastID)
		}
		select {
		case <-db.Wake():
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// everything reads every notification (List, no index) once.
func everything(t *testing.T, db *DB) []Item {
	t.Helper()
	var all []Item
	for before := uint64(0); ; {
		items, err := db.List(Filter{Before: before, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, items...)
		if len(items) < 1000 {
			return all
		}
		before = items[len(items)-1].Notification.ID
	}
}

// findAll pages through Find(q) 50 at a time and returns the ids.
func findAll(t *testing.T, db *DB, q Query) []uint64 {
	t.Helper()
	var out []uint64
	q.Limit = 50
	for {
		items, err := db.Find(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			out = append(out, it.Notification.ID)
		}
		if len(items) < q.Limit {
			return out
		}
		q.Before = items[len(items)-1].Notification.ID
	}
}

// checkIndexes compares what Find, HourCounts, OutboxOf and
// OutboxOfOrder answer with what reading everything finds.
func checkIndexes(t *testing.T, db *DB, since time.Time) {
	t.Helper()
	all := everything(t, db)
	want := func(keep func(Item) bool) []uint64 {
		var ids []uint64
		for _, it := range all {
			if keep(it) {
				ids = append(ids, it.Notification.ID)
			}
		}
		return ids
	}
	for _, q := range []Query{{Gateway: "market"}, {State: ipn.StateInvalid}, {Gateway: "shop", State: ipn.StateApplied},
		{Gateway: "market", State: ipn.StateInvalid}, {State: ipn.StateReceived}} {
		exp := want(func(it Item) bool {
			return (q.Gateway == "" || it.Notification.Gateway == q.Gateway) && (q.State == "" || it.Processing.State == q.State)
		})
		if got := findAll(t, db, q); !slices.Equal(got, exp) {
			t.Errorf("Find(%+v): %d ids %v...; reading everything: %d %v...", q, len(got), head(got), len(exp), head(exp))
		}
	}
	// Hourly counts against the states read one by one.
	type key struct {
		g string
		h time.Time
	}
	exp := map[key]HourCount{}
	for _, it := range all {
		n := it.Notification
		h := n.ReceivedAt.UTC().Truncate(time.Hour)
		if h.Before(since.Truncate(time.Hour)) {
			continue
		}
		c := exp[key{n.Gateway, h}]
		c.Gateway, c.Hour = n.Gateway, h
		c.Received++
		switch it.Processing.State {
		case ipn.StateApplied:
			c.Applied++
		case ipn.StateInvalid:
			c.Invalid++
		}
		exp[key{n.Gateway, h}] = c
	}
	hours, err := db.HourCounts(since)
	if err != nil {
		t.Fatal(err)
	}
	got := map[key]HourCount{}
	for _, c := range hours {
		got[key{c.Gateway, c.Hour}] = c
	}
	if len(got) != len(exp) {
		t.Errorf("HourCounts: %d hours, want %d", len(got), len(exp))
	}
	for k, c := range exp {
		if got[k] != c {
			t.Errorf("HourCounts %s %s: %+v, want %+v", k.g, k.h, got[k], c)
		}
	}
	// Orders by status, against every order.
	every, err := db.ListOrders("", "", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range ipn.OrderStatuses {
		var exp []string
		for _, o := range every {
			if o.Status == st {
				exp = append(exp, o.ID)
			}
		}
		var got []string
		for before := ""; ; {
			page, err := db.ListOrders(st, before, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range page {
				got = append(got, o.ID)
			}
			if len(page) < 7 {
				break
			}
			before = OrderCursor(page[len(page)-1])
		}
		if !slices.Equal(got, exp) {
			t.Errorf("orders %s: %d (%v...), want %d (%v...)", st, len(got), got[:min(3, len(got))], len(exp), exp[:min(3, len(exp))])
		}
	}
	// Outbox items by notification and by order, against every item.
	var items []OutboxItem
	db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			var it OutboxItem
			if err := decodeOutboxBody(v, &it); err != nil {
				t.Fatal(err)
			}
			items = append(items, it)
			return nil
		})
	})
	if len(items) == 0 {
		t.Fatal("no outbox items: the mix should queue some")
	}
	for _, probe := range []OutboxItem{items[0], items[len(items)/2], items[len(items)-1]} {
		var byN, byO []uint64
		for _, it := range items {
			if it.Notification == probe.Notification {
				byN = append(byN, it.ID)
			}
			if it.Effect.OrderID == probe.Effect.OrderID {
				byO = append(byO, it.ID)
			}
		}
		of, err := db.OutboxOf(probe.Notification)
		if err != nil {
			t.Fatal(err)
		}
		ofOrder, err := db.OutboxOfOrder(probe.Effect.OrderID)
		if err != nil {
			t.Fatal(err)
		}
		ids := func(its []OutboxItem) []uint64 {
			var out []uint64
			for _, it := range its {
				out = append(out, it.ID)
			}
			return out
		}
		if !slices.Equal(ids(of), byN) || !slices.Equal(ids(ofOrder), byO) {
			t.Errorf("outbox of notification %d: %v, want %v; of order %s: %v, want %v", probe.Notification, ids(of), byN,
				probe.Effect.OrderID, ids(ofOrder), byO)
		}
	}
}

func head(ids []uint64) []uint64 { return ids[:min(len(ids), 5)] }

// An old notification among thousands is found by its txn id, order id
// and customer email (in another case), and the gateway and state
// filters find exactly what reading everything finds; the outbox items
// of an old order and notification are found too.
func TestIndexFindsOldAmongMany(t *testing.T) {
	db := reopen(t, filepath.Join(t.TempDir(), "ipnd.db"))
	stop := mixPipeline(t, db)
	defer stop()
	now := time.Now()
	const n = 3000
	fillMix(t, db, 1, n, now)
	const old = 3 // the third notification stored: the oldest but two
	_, p, err := db.Get(old)
	if err != nil || p.Event == nil || p.State != ipn.StateApplied {
		t.Fatalf("notification %d: %v %+v", old, err, p)
	}
	for _, q := range []Query{{Term: "tx-00003"}, {Term: "ORD-00003"}, {Order: "ORD-00003"}, {Term: "  c3@EXAMPLE.com"},
		{Term: "c3@example.com", Gateway: "shop"}} {
		ids := findAll(t, db, q)
		if !slices.Contains(ids, old) {
			t.Errorf("Find(%+v) = %v: the old notification %d is not found", q, head(ids), old)
		}
		for _, id := range ids {
			_, p, _ := db.Get(id)
			if !slices.Contains(eventTerms(p.Event), strings.ToLower(strings.TrimSpace(cmpTerm(q)))) {
				t.Errorf("Find(%+v) found %d, whose event is %+v", q, id, p.Event)
			}
		}
	}
	if ids := findAll(t, db, Query{Order: "ord-00003"}); len(ids) != 0 {
		t.Errorf("the order filter is exact: ord-00003 found %v", ids)
	}
	// Every notification whose recorded event names the customer (the
	// invalid ones keep no event: found by the state filter only).
	var c3 []uint64
	for _, it := range everything(t, db) {
		if slices.Contains(eventTerms(it.Processing.Event), "c3@example.com") {
			c3 = append(c3, it.Notification.ID)
		}
	}
	if ids := findAll(t, db, Query{Term: "c3@example.com"}); !slices.Equal(ids, c3) || len(c3) < n/40*5/6 {
		t.Errorf("customer c3: %d notifications, want %d (of %d stored)", len(ids), len(c3), n/40)
	}
	checkIndexes(t, db, now.Add(-72*time.Hour))
}

func cmpTerm(q Query) string {
	if q.Term != "" {
		return q.Term
	}
	return q.Order
}

// Paging through a filter while notifications keep arriving and being
// processed shows each matching notification once, in order, and none
// of those stored before the first page is missed.
func TestIndexPagingStableWithInserts(t *testing.T) {
	db := reopen(t, filepath.Join(t.TempDir(), "ipnd.db"))
	stop := mixPipeline(t, db)
	defer stop()
	now := time.Now()
	fillMix(t, db, 1, 2000, now)
	q := Query{Gateway: "shop", State: ipn.StateApplied}
	want := findAll(t, db, q)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() { // appends through the real path while the pages are read
		defer wg.Done()
		for i := 5000; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if _, _, err := db.Append(context.Background(), mixNotification(i, time.Now())); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var got []uint64
	q.Limit = 20
	for {
		items, err := db.Find(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			got = append(got, it.Notification.ID)
		}
		if len(items) < q.Limit {
			break
		}
		q.Before = items[len(items)-1].Notification.ID
	}
	close(done)
	wg.Wait()
	for i := 1; i < len(got); i++ {
		if got[i] >= got[i-1] {
			t.Fatalf("page order broken at %d: %d after %d", i, got[i], got[i-1])
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged while inserting: %d ids (%v...), want the %d stored before (%v...)", len(got), head(got), len(want), head(want))
	}
}

// A store written by a build that knew schema 6 (no indexes) gets them
// on open, in chunks, each committed with how far it got: a run stopped
// between two chunks (as kill -9 would) resumes, and the indexes then
// match what reading everything finds, the hourly counts included
// (nothing counted twice).
func TestIndexMigrationFromSchema6(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := mixPipeline(t, db)
	now := time.Now()
	fillMix(t, db, 1, 1500, now)
	stop()
	// Back to what a build of schema 6 left: no index buckets.
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range indexBuckets {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(6))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	defer func(c int) { indexBuildChunk = c }(indexBuildChunk)
	indexBuildChunk = 100
	chunks := 0
	indexBuildHook = func() error {
		if chunks++; chunks == 7 {
			return errors.New("killed")
		}
		return nil
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Open with the build stopped after 6 chunks: %v", err)
	}
	indexBuildHook = nil
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keyIndexBuild); len(v) != 9 || v[0] != buildNotifications || getU64(m.Get(keySchema)) != SchemaVersion {
			t.Errorf("after the stop: build mark %q, schema %d; want a build under way and schema %d (a build of 6 refuses)",
				v, getU64(m.Get(keySchema)), SchemaVersion)
		}
		return nil
	})
	b.Close()

	db = reopen(t, path)
	db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyIndexBuild); v != nil {
			t.Errorf("build mark %q left after Open", v)
		}
		return nil
	})
	checkIndexes(t, db, now.Add(-72*time.Hour))
	if ids := findAll(t, db, Query{Term: "TX-00002"}); !slices.Equal(ids, []uint64{2}) {
		t.Errorf("after the migration, txn TX-00002: %v, want [2]", ids)
	}
	// Later writes keep them.
	stop = mixPipeline(t, db)
	defer stop()
	fillMix(t, db, 1501, 300, now)
	checkIndexes(t, db, now.Add(-72*time.Hour))
}

// A time range is an id range: FirstIDAt finds the first notification
// received at a time, and Find keeps to (After, Before).
func TestIndexTimeRange(t *testing.T) {
	db := reopen(t, filepath.Join(t.TempDir(), "ipnd.db"))
	stop := mixPipeline(t, db)
	defer stop()
	now := time.Now().Truncate(time.Second)
	fillMix(t, db, 1, 600, now) // one a minute, the newest a minute ago
	for _, id := range []uint64{1, 2, 300, 599, 600} {
		n, _, err := db.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := db.FirstIDAt(n.ReceivedAt); err != nil || got != id {
			t.Errorf("FirstIDAt(received at of %d) = %d, %v", id, got, err)
		}
		if got, _ := db.FirstIDAt(n.ReceivedAt.Add(time.Second)); got != id+1 {
			t.Errorf("FirstIDAt(a second after %d) = %d, want %d", id, got, id+1)
		}
	}
	if got, _ := db.FirstIDAt(now.Add(-24 * time.Hour)); got != 1 {
		t.Errorf("FirstIDAt(before everything) = %d, want 1", got)
	}
	if got, _ := db.FirstIDAt(now.Add(time.Hour)); got != 601 {
		t.Errorf("FirstIDAt(after everything) = %d, want 601", got)
	}
	all := everything(t, db)
	for _, q := range []Query{{After: 100, Before: 200}, {Gateway: "market", After: 100, Before: 200},
		{Term: "c3@example.com", After: 50}, {State: ipn.StateInvalid, After: 590}} {
		var want []uint64
		for _, it := range all {
			id := it.Notification.ID
			if id > q.After && (q.Before == 0 || id < q.Before) && (q.Gateway == "" || it.Notification.Gateway == q.Gateway) &&
				(q.State == "" || it.Processing.State == q.State) &&
				(q.Term == "" || slices.Contains(eventTerms(it.Processing.Event), q.Term)) {
				want = append(want, id)
			}
		}
		if got := findAll(t, db, q); !slices.Equal(got, want) || len(want) == 0 {
			t.Errorf("Find(%+v) = %v, want %v", q, head(got), head(want))
		}
	}
}
