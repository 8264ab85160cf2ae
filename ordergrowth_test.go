package main

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// TestReusedOrderIDStaysCheap (issue 19 point 6): a shop that sends
// every PayPal payment with the same invoice makes one order of them
// all. Over HTTP, the admin API shows every payment in its facts and
// history; in the database file, the order's value (read and rewritten
// at each event) stops growing once the order has a few facts: they are
// appended elsewhere. Before, the value held every fact and history
// entry, and each event re-tallied and rewrote them all.
func TestReusedOrderIDStaysCheap(t *testing.T) {
	pp := newFakePayPal(t)
	dir := t.TempDir()
	cfg := payPalConfig(t, dir, pp.srv.URL+"/cgi-bin/webscr", "")
	d := startDaemon(t, dir, cfg)
	const id = "SHOP-REUSED"
	sent := 0
	send := func(n int) ipn.Order {
		for range n {
			sent++
			body := ipnBody("txn_id", fmt.Sprintf("7RU%08dX", sent), "invoice", id, "mc_gross", "5.00")
			pp.remember(body)
			if code := d.postIPN("paypal", body); code != 200 {
				t.Fatalf("IPN %d: HTTP %d", sent, code)
			}
		}
		var o ipn.Order
		waitFor(t, fmt.Sprintf("order %s with %d facts", id, sent), 30*time.Second, func() bool {
			o = ipn.Order{}
			d.api("GET", "/api/orders/"+id, nil, &o)
			return len(o.Facts) == sent
		})
		return o
	}
	valueSize := func() int {
		d.stop()
		if onPG() { // the order's row: its record and its tally
			conn, err := pgx.Connect(t.Context(), testDSN(t, dir))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(t.Context())
			var n int
			if err := conn.QueryRow(t.Context(), `SELECT octet_length(record::text) + coalesce(octet_length(tally::text), 0) FROM orders WHERE id = $1`, []byte(id)).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		b, err := bolt.Open(filepath.Join(dir, "ipnd.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		n := 0
		b.View(func(tx *bolt.Tx) error {
			n = len(tx.Bucket([]byte("orders")).Get([]byte(id)))
			return nil
		})
		return n
	}
	send(12)
	at12 := valueSize()
	d = startDaemon(t, dir, cfg)
	o := send(48)
	if len(o.TxnIDs) != 60 || o.Paid != "300.00" || len(o.History) < 60 {
		t.Errorf("after 60 payments: %d txn ids, paid %s, %d history entries", len(o.TxnIDs), o.Paid, len(o.History))
	}
	if at60 := valueSize(); at60 > at12+32 {
		t.Errorf("the order's value grew from %d bytes after 12 payments to %d after 60", at12, at60)
	}
}
