package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// fillAll sets every stored field of v (a pointer) to a value drawn from
// r, none zero: strings, numbers, bools, times, and (recursively) pointers,
// structs and slices. Fields JSON does not keep (json:"-") stay zero.
func fillAll(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fillAll(r, v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(r.Int64N(4e9)+1, r.Int64N(1e9)).UTC()))
			return
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() || f.Tag.Get("json") == "-" {
				continue
			}
			fillAll(r, v.Field(i))
		}
	case reflect.Slice:
		n := 1 + r.IntN(3)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fillAll(r, s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		b := make([]byte, 1+r.IntN(20))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		v.SetString(string(b))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(1 + r.Int64N(1<<20))
	case reflect.Uint64:
		v.SetUint(1 + r.Uint64())
	default:
		panic(fmt.Sprintf("fillAll: field of kind %s: teach the binary outbox layout (outboxbody.go) and this test about it", v.Kind()))
	}
}

// Every field an outbox item stores comes back from the binary layout:
// a field added to OutboxItem, Effect, Event, OrderSnapshot, Customer or
// Delivered and not to the layout fails here.
func TestOutboxBodyEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var it ipn.OutboxItem
		fillAll(r, reflect.ValueOf(&it))
		b := encodeOutboxBody(&it)
		var got ipn.OutboxItem
		if err := decodeOutboxBody(b, &got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, it) {
			t.Fatalf("round trip:\n%+v\nwant\n%+v", got, it)
		}
	}
	// Unknown kinds, nil and empty lists, no event or order.
	it := ipn.OutboxItem{ID: 7, State: ipn.OutboxPending, Effect: ipn.Effect{Kind: "lane", Order: &ipn.OrderSnapshot{Flags: []string{}}}}
	var got ipn.OutboxItem
	if err := decodeOutboxBody(encodeOutboxBody(&it), &got); err != nil || !reflect.DeepEqual(got, it) {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, it)
	}
}

// The binary layout reads as the JSON one did: a typical email and
// callback decode to the same item either way.
func TestOutboxBodyAsJSON(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 123, time.UTC)
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "payment.completed", TxnID: "t1",
		EventID: "msg_1", OrderID: "O1", Amount: "12.50", Currency: "EUR", CustomerEmail: "c@example.com"}
	snap := &ipn.OrderSnapshot{ID: "O1", Status: ipn.OrderPaid, Flags: []string{}, Amount: "12.50", Paid: "12.50",
		Refunded: "0.00", Currency: "EUR", Customer: ipn.Customer{Email: "c@example.com"}, Reason: "created", Version: 1,
		Deliveries: []ipn.Delivered{{Product: "p", DownloadsLeft: 3, ExpiresAt: now}}}
	for _, it := range []ipn.OutboxItem{
		{ID: 1, DeliveryID: "ipnd_x_1", State: ipn.OutboxPending, Notification: 9, CreatedAt: now, NextAttempt: now,
			Effect: ipn.Effect{Kind: ipn.EffectEmailCustomer, Template: "payment_received", Cause: "c1", OrderID: "O1",
				To: "c@example.com", Reason: "r", Event: ev, Amount: "12.50", Order: snap}},
		{ID: 2, State: ipn.OutboxPending, CreatedAt: now, Effect: ipn.Effect{Kind: ipn.EffectShopCallback, Cause: "c2", Event: ev, Order: snap}},
	} {
		j, err := encodeValue(&it)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON, fromBin ipn.OutboxItem
		if err := decodeOutboxBody(j, &fromJSON); err != nil {
			t.Fatal(err)
		}
		if err := decodeOutboxBody(encodeOutboxBody(&it), &fromBin); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromBin, fromJSON) {
			t.Errorf("binary reads\n%+v\nJSON reads\n%+v", fromBin, fromJSON)
		}
		jb, _ := json.Marshal(fromBin)
		jj, _ := json.Marshal(fromJSON)
		if string(jb) != string(jj) {
			t.Errorf("JSON of the binary item\n%s\nof the JSON one\n%s", jb, jj)
		}
	}
}

// A damaged binary item is an error, never a panic, and what decodes
// encodes to the same bytes.
func FuzzOutboxBody(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 4 {
		var it ipn.OutboxItem
		fillAll(r, reflect.ValueOf(&it))
		f.Add(encodeOutboxBody(&it))
	}
	f.Add(encodeOutboxBody(&ipn.OutboxItem{ID: 1, Effect: ipn.Effect{Kind: "x"}}))
	f.Add([]byte{tagOutboxBin, outboxBinFormat})
	f.Add(outboxBody(&ipn.OutboxItem{ID: 1, Effect: ipn.Effect{Kind: ipn.EffectEmailCustomer, Reason: "order created by this event; payment 1 completed"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var any ipn.OutboxItem
		decodeOutboxBody(b, &any) // any layout: an error, never a panic
		var it ipn.OutboxItem
		if err := decodeOutboxBin(b, &it); err != nil {
			return
		}
		again := encodeOutboxBody(&it)
		var it2 ipn.OutboxItem
		if err := decodeOutboxBin(again, &it2); err != nil || !reflect.DeepEqual(it, it2) {
			t.Fatalf("round trip: %+v -> %+v, %v", it, it2, err)
		}
		if string(again) != string(b) {
			t.Fatalf("re-encoded %x, read %x", again, b)
		}
	})
}

func BenchmarkOutboxBody(b *testing.B) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 123, time.UTC)
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "payment.completed", TxnID: "txn_000123",
		EventID: "msg_2xq1", OrderID: "ORD-000123", Amount: "12.50", Currency: "EUR", CustomerEmail: "c000123@example.com", CustomerName: "Customer 123"}
	snap := &ipn.OrderSnapshot{ID: "ORD-000123", Status: ipn.OrderPaid, Flags: []string{}, Amount: "12.50", Paid: "12.50",
		Refunded: "0.00", Currency: "EUR", Customer: ipn.Customer{Email: "c000123@example.com", Name: "Customer 123"},
		Reason: "order created by this event; payment txn_000123 completed 12.50 EUR; paid 12.50 EUR", Version: 1}
	it := ipn.OutboxItem{ID: 123, DeliveryID: "ipnd_0123456789abcdef_123", State: ipn.OutboxPending, Notification: 99,
		CreatedAt: now, NextAttempt: now, Effect: ipn.Effect{Kind: ipn.EffectEmailCustomer, Template: "payment_received",
			Cause: "event/\x00ORD-000123\x00payment\x00completed\x00txn_000123/paid/payment_received", OrderID: "ORD-000123",
			To: "c000123@example.com", Reason: "payment txn_000123 completed 12.50 EUR", Event: ev, Amount: "12.50", Order: snap}}
	j, _ := encodeValue(&it)
	bin := outboxBody(&it)
	b.Logf("JSON packed %d bytes, binary %d, packed %d", len(j), len(encodeOutboxBody(&it)), len(bin))
	b.Run("encode/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeValue(&it)
		}
	})
	b.Run("encode/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			outboxBody(&it)
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got ipn.OutboxItem
			decodeOutboxBody(j, &got)
		}
	})
	b.Run("decode/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got ipn.OutboxItem
			decodeOutboxBody(bin, &got)
		}
	})
}

// A file at schema 8 holds its outbox items as packed JSON: it opens as 9
// without rewriting them, they read and are delivered as before, and the
// items queued from then on are binary, side by side with them.
func TestOutboxItemBeforeBinary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	old := map[uint64][]byte{}
	// As schema 8 left them: every item JSON, packed.
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		var ids []uint64
		b.ForEach(func(k, _ []byte) error { ids = append(ids, getU64(k)); return nil })
		for _, id := range ids {
			it, err := getOutbox(tx, id)
			if err != nil {
				return err
			}
			v, err := encodeValue(it)
			if err != nil {
				return err
			}
			if v[0] != tagJSON {
				t.Fatalf("item %d not packed as schema 8 packed it", id)
			}
			old[id] = v
			if err := b.Put(u64(id), v); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(8))
	}); err != nil {
		t.Fatal(err)
	}
	if len(old) < 2 {
		t.Fatalf("%d items queued, want an email and a callback", len(old))
	}
	db.Close()
	db = reopen(t, path)
	stored := func(id uint64) (v []byte) {
		db.bolt.View(func(tx *bolt.Tx) error {
			if got := getU64(tx.Bucket(bucketMeta).Get(keySchema)); got != SchemaVersion || SchemaVersion != 9 {
				t.Errorf("schema after open = %d, want %d (9)", got, SchemaVersion)
			}
			v = bytes.Clone(tx.Bucket(bucketOutbox).Get(u64(id)))
			return nil
		})
		return v
	}
	for id, v := range old {
		if !bytes.Equal(stored(id), v) {
			t.Errorf("item %d rewritten on upgrade", id)
		}
	}
	mails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	calls, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(mails) != 1 || len(calls) != 1 || mails[0].Effect.To != "c@example.com" || calls[0].Effect.Event == nil ||
		calls[0].Effect.Order == nil || calls[0].State != ipn.OutboxPending {
		t.Fatalf("due after the upgrade: %+v, %+v", mails, calls)
	}
	queuePaid(t, db, "O2", now)
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: mails[0].ID, State: ipn.OutboxSent, Attempts: 1},
		{ID: calls[0].ID, State: ipn.OutboxSent, Attempts: 1}}, now); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetOutbox(mails[0].ID)
	if err != nil || got.State != ipn.OutboxSent || got.Effect.To != "c@example.com" {
		t.Errorf("old email after its result: %+v, %v", got, err)
	}
	mails, _ = lane(t, db, ipn.EffectEmailCustomer, now)
	calls, _ = lane(t, db, ipn.EffectShopCallback, now)
	if len(mails) != 1 || len(calls) != 1 || mails[0].Effect.OrderID != "O2" || calls[0].Effect.Order == nil {
		t.Fatalf("due after the new order: %+v, %+v", mails, calls)
	}
	for _, id := range []uint64{mails[0].ID, calls[0].ID} {
		if v := stored(id); len(v) == 0 || (v[0] != tagOutboxPacked && v[0] != tagOutboxBin) {
			t.Errorf("item %d queued after the upgrade not binary: % x", id, v[:min(len(v), 8)])
		}
	}
	if sent, _ := db.ListOutbox(ipn.OutboxSent, 10); len(sent) != 2 {
		t.Errorf("ListOutbox(sent) = %+v", sent)
	}
}
