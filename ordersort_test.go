package main

import (
	"net/url"
	"strings"
	"testing"

	"ipnd/admin"
	"ipnd/ipn"
)

// TestOrdersNewestChangeFirst: GET /api/orders and ipnd orders list by
// last change, newest first (they sorted by id as text: ORD-10 before
// ORD-9, and an order just paid stayed where its id put it), and paging
// with next_before gives every order once (issue 19 point 8).
func TestOrdersNewestChangeFirst(t *testing.T) {
	d, post := webhookDaemon(t, "")
	for _, id := range []string{"ORD-9", "ORD-10", "ORD-100", "ORD-2"} {
		if st := d.api("POST", "/api/orders", map[string]any{"id": id, "amount": "5.00", "currency": "USD", "customer_email": "c@example.com"}, nil); st != 201 {
			t.Fatalf("register %s: %d", id, st)
		}
	}
	// ORD-10 is paid last: it changed last.
	if st := post("msg_pay10", "payment.completed", map[string]any{"txn_id": "T10", "order_id": "ORD-10", "amount": "5.00",
		"currency": "USD", "status": "completed"}); st != 200 {
		t.Fatalf("post: %d", st)
	}
	waitOrder(t, d, "ORD-10", ipn.OrderPaid)
	want := []string{"ORD-10", "ORD-2", "ORD-100", "ORD-9"}

	var all admin.OrderList
	d.api("GET", "/api/orders", nil, &all)
	if got := orderIDs(all.Orders); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("GET /api/orders: %v, want %v (last change, newest first)", got, want)
	}
	// One at a time through next_before: each once, in the same order.
	var paged []string
	before := ""
	for range 10 {
		var page admin.OrderList
		q := "/api/orders?limit=1"
		if before != "" {
			q += "&before=" + url.QueryEscape(before)
		}
		if st := d.api("GET", q, nil, &page); st != 200 {
			t.Fatalf("GET %s: %d", q, st)
		}
		paged = append(paged, orderIDs(page.Orders)...)
		if page.NextBefore == "" {
			break
		}
		before = page.NextBefore
	}
	if strings.Join(paged, " ") != strings.Join(want, " ") {
		t.Errorf("paged one by one: %v, want %v", paged, want)
	}
	// The CLI's table in the same order.
	out, stderr, code := runCode(t, envFunc(), "orders", "-config", d.cfg)
	if code != 0 {
		t.Fatalf("ipnd orders: exit %d %s", code, stderr)
	}
	last := -1
	for _, id := range want {
		i := strings.Index(out, id+" ")
		if i < last {
			t.Errorf("ipnd orders lists %s out of order:\n%s", id, out)
		}
		last = i
	}
}

func orderIDs(orders []ipn.Order) []string {
	out := []string{}
	for _, o := range orders {
		out = append(out, o.ID)
	}
	return out
}
