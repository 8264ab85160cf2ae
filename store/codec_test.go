package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestTypicalBody(t *testing.T) {
	for _, i := range []int{1, 999, 123456} {
		if n := len(typicalBody(i)); n != 230 {
			t.Errorf("typicalBody(%d) is %d bytes, want 230", i, n)
		}
	}
}

// snapshotAPI is everything the API shows of db, as JSON: every
// notification with its processing state, every order and outbox item.
func snapshotAPI(t *testing.T, db *DB) string {
	t.Helper()
	items, err := db.List(Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	orders, err := db.ListOrders("", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	outbox, err := db.ListOutbox("", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var one []any
	for _, it := range items {
		n, p, err := db.Get(it.Notification.ID)
		if err != nil {
			t.Fatal(err)
		}
		one = append(one, n, p)
	}
	for _, o := range orders {
		got, err := db.GetOrder(o.ID)
		if err != nil {
			t.Fatal(err)
		}
		one = append(one, got)
	}
	b, err := json.MarshalIndent(map[string]any{"list": items, "orders": orders, "outbox": outbox, "each": one}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) == 0 || len(orders) == 0 || len(outbox) == 0 {
		t.Fatalf("nothing to compare: %d notifications, %d orders, %d outbox items", len(items), len(orders), len(outbox))
	}
	return string(b)
}

// packedValues counts the values in db that are packed.
func packedValues(t *testing.T, db *DB) int {
	t.Helper()
	db.settle()
	n := 0
	db.bolt.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			return b.ForEach(func(_, v []byte) error {
				if len(v) > 0 && (v[0] == tagJSON || v[0] == tagRecord) {
					n++
				}
				return nil
			})
		})
	})
	return n
}

// The same database written plain (as schema 2 did) and packed shows the
// same through the API.
func TestPackedShowsTheSame(t *testing.T) {
	dir := t.TempDir()
	var shown [2]string
	for k, plain := range []bool{true, false} {
		path := fmt.Sprintf("%s/%d.db", dir, k)
		writePlain = plain
		fillTypical(t, path, Options{}, 30)
		writePlain = false
		db := reopen(t, path)
		if n := packedValues(t, db); (n > 0) == plain {
			t.Errorf("plain %v: %d packed values", plain, n)
		}
		s := snapshotAPI(t, db)
		db.Close()
		// Times and delivery ids differ between the two runs.
		shown[k] = normalizeRun(s)
	}
	if shown[0] != shown[1] {
		t.Errorf("packed database shows\n%s\nplain one\n%s", shown[1], shown[0])
	}
}

// normalizeRun blanks what differs between two runs of fillTypical.
func normalizeRun(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, f := range []string{`"at"`, `"created_at"`, `"updated_at"`, `"sent_at"`, `"next_attempt"`, `"delivery_id"`,
			`"ReceivedAt"`, `"Headers"`, `"received_at"`, `"Webhook-Timestamp"`, `"Webhook-Signature"`} {
			if strings.Contains(line, f+":") {
				line = f + ": ..."
			}
		}
		out = append(out, line)
	}
	// The values of the signature headers (the timestamp is the second of the run).
	return runValues.ReplaceAllString(strings.Join(out, "\n"), `"..."`)
}

var runValues = regexp.MustCompile(`"v1,[^"]*"|"[0-9]{10}"`)

func TestPackRoundTrip(t *testing.T) {
	cases := [][]byte{
		benchOrder,
		[]byte(strings.Repeat("a", 5000)),                       // one long overlapping match
		[]byte(strings.Repeat("abc", 100) + dictJSON),           // matches into the dictionary
		[]byte(dictRecord + dictRecord),                         // long matches
		[]byte(strings.Repeat("\x00\x01\x02\x03\xff", 40)),      // binary
		[]byte(filler("x", 300)),                                // does not shrink: stays plain
		append([]byte(strings.Repeat("z", 200)), benchOrder...), // literal runs over 15
	}
	for _, p := range []*packer{jsonPacker, recordPacker} {
		for i, c := range cases {
			packed := p.pack(c)
			if packed[0] != p.tag {
				if !bytes.Equal(packed, c) {
					t.Errorf("case %d: not packed but changed", i)
				}
				continue
			}
			got, err := p.unpack(packed)
			if err != nil || !bytes.Equal(got, c) {
				t.Errorf("case %d (%d bytes, packed %d): unpack = %v, equal %v", i, len(c), len(packed), err, bytes.Equal(got, c))
			}
			// Every truncation and every extra byte is an error, never a panic.
			for cut := 1; cut < len(packed); cut++ {
				if _, err := p.unpack(packed[:cut]); err == nil {
					t.Errorf("case %d: unpack of the first %d of %d bytes succeeded", i, cut, len(packed))
				}
			}
			if _, err := p.unpack(append(bytes.Clone(packed), 0)); err == nil {
				t.Errorf("case %d: a byte after the end was accepted", i)
			}
		}
	}
	if v := jsonPacker.pack(benchOrder); len(v) > len(benchOrder)/2 {
		t.Errorf("a typical order packs to %d of %d bytes, want at most half", len(v), len(benchOrder))
	}
}

// FuzzPack: whatever is packed unpacks to itself, and unpacking or
// decoding garbage returns an error, never a panic.
func FuzzPack(f *testing.F) {
	f.Add(benchOrder)
	f.Add([]byte(strings.Repeat("a", 300)))
	f.Add(jsonPacker.pack(benchOrder))
	f.Add(recordPacker.pack([]byte(dictRecord)))
	f.Add([]byte{tagJSON, 0x80, 0x01, 0xf0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range []*packer{jsonPacker, recordPacker} {
			packed := p.pack(data)
			if ref := referencePack(p, data); !bytes.Equal(packed, ref) {
				t.Fatalf("pack = %x, the codec as first written packs %x", packed, ref)
			}
			for _, in := range [][]byte{packed, append([]byte{p.tag}, data...)} {
				if len(in) == 0 || in[0] != p.tag {
					continue // not packed
				}
				got, err := p.unpack(in)
				ref, rerr := referenceUnpack(p, in)
				if (err == nil) != (rerr == nil) || !bytes.Equal(got, ref) {
					t.Fatalf("unpack(%x) = %q, %v; the codec as first written gives %q, %v", in, got, err, ref, rerr)
				}
			}
			if len(packed) > 0 && packed[0] == p.tag && !bytes.Equal(packed, data) {
				got, err := p.unpack(packed)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("unpack(pack(x)) = %q, %v; want x = %q", got, err, data)
				}
				if len(packed) >= len(data) {
					t.Fatalf("packed %d bytes into %d", len(data), len(packed))
				}
			} else if !bytes.Equal(packed, data) {
				t.Fatalf("pack changed a value it did not pack")
			}
			garbage := append([]byte{p.tag}, data...)
			if got, err := p.unpack(garbage); err == nil {
				if again, err := p.unpack(append([]byte{p.tag}, data...)); err != nil || !bytes.Equal(again, got) {
					t.Fatalf("unpack is not deterministic")
				}
			}
		}
		var v any
		_ = decodeValue(data, &v)
		_, _ = decodeRecord(1, data)
	})
}

// A raw notification is stored packed, in the journal and in bbolt, and
// comes back byte for byte (PayPal's postback resends the body exactly),
// also when it was recovered from the journal after a crash.
func TestPackedRecordVerbatim(t *testing.T) {
	body := "mc_gross=149.90&protection_eligibility=Eligible&payer_id=LPLWNMTBWMFAY&payment_date=20%3A12%3A59+Jan+13%2C+2026+PST" +
		"&payment_status=Completed&charset=windows-1252&first_name=J%F6rg&mc_fee=4.65&notify_version=3.9&custom=\xff\x00raw" +
		"&txn_id=61E67681CH3238416&payment_type=instant&receiver_email=shop%40example.com&mc_currency=EUR&invoice=ORD-1001\r\n"
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true})
	in := sample("paypal", "61E67681CH3238416", body)
	if rec := encodeRecord(in); rec[0] != tagRecord || len(rec) >= len(plainRecord(in)) {
		t.Fatalf("record not packed: %d bytes, first byte %#x", len(rec), rec[0])
	}
	if _, _, err := db.Append(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	kill(t, db) // only the journal has it
	db = reopen(t, path)
	defer db.Close()
	got, _, err := db.Get(1)
	if err != nil || string(got.Body) != body || !got.ReceivedAt.Equal(in.ReceivedAt) || fmt.Sprint(got.Headers) != fmt.Sprint(in.Headers) {
		t.Fatalf("Get(1) = %+v, %v; body want %q", got, err, body)
	}
	if n := packedValues(t, db); n != 1 {
		t.Errorf("%d packed values in bbolt, want the record", n)
	}
}

// A typical notification (230-byte body, its order, a customer email and
// a shop callback, sent) takes at most 2.5 KB and the outbox items'
// state records across the buckets (2 KB before schema 7, whose indexes
// take ~460 bytes: index.go; schema 8 adds ~60 bytes an outbox item, so
// that a delivery result does not rewrite the item: outboxstate.go);
// written as schema 2 did, it took over 6 KB.
func TestTypicalNotificationSpace(t *testing.T) {
	const n = 2000
	for _, plain := range []bool{true, false} {
		writePlain = plain
		sp := fillTypical(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{}, n)
		writePlain = false
		var sum float64
		for _, b := range sp.Buckets {
			sum += b.PerNotification
		}
		t.Logf("plain %v: %.0f bytes per notification across the buckets, file %.0f", plain, sum, sp.PerNotification)
		if plain && sum < 4000 {
			t.Errorf("written plain: %.0f bytes per notification; the comparison is off", sum)
		}
		if !plain && sum > 2560+2*60 {
			t.Errorf("%.0f bytes per typical notification, want at most 2560 + 2 state records of 60", sum)
		}
	}
}
