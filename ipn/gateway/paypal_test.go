package gateway_test

import (
	"errors"
	"strings"
	"testing"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

func TestPayPalEventMapping(t *testing.T) {
	type want struct {
		typ    ipn.EventType
		status ipn.EventStatus
	}
	cases := []struct {
		txnType, status string
		want            want
	}{
		{"web_accept", "Completed", want{ipn.TypePayment, ipn.StatusCompleted}},
		{"cart", "Processed", want{ipn.TypePayment, ipn.StatusCompleted}},
		{"express_checkout", "Pending", want{ipn.TypePayment, ipn.StatusPending}},
		{"send_money", "Refunded", want{ipn.TypeRefund, ipn.StatusRefunded}},
		{"virtual_terminal", "Reversed", want{ipn.TypeReversal, ipn.StatusReversed}},
		{"", "Reversed", want{ipn.TypeReversal, ipn.StatusReversed}},
		{"", "Canceled_Reversal", want{ipn.TypeReversalCanceled, ipn.StatusCompleted}},
		{"web_accept", "Denied", want{ipn.TypePayment, ipn.StatusDenied}},
		{"web_accept", "Failed", want{ipn.TypePayment, ipn.StatusFailed}},
		{"web_accept", "Expired", want{ipn.TypePayment, ipn.StatusExpired}},
		{"web_accept", "Voided", want{ipn.TypePayment, ipn.StatusCanceled}},
		{"express_checkout", "Created", want{ipn.TypePayment, ipn.StatusPending}},
		{"web_accept", "Bogus", want{ipn.TypeOther, ""}},
		{"subscr_signup", "", want{ipn.TypeSubscriptionStarted, ipn.StatusCompleted}},
		{"subscr_payment", "Completed", want{ipn.TypeSubscriptionPayment, ipn.StatusCompleted}},
		{"subscr_payment", "Pending", want{ipn.TypeSubscriptionPayment, ipn.StatusPending}},
		{"subscr_failed", "", want{ipn.TypeSubscriptionPayment, ipn.StatusFailed}},
		{"subscr_cancel", "", want{ipn.TypeSubscriptionCanceled, ipn.StatusCanceled}},
		{"subscr_eot", "", want{ipn.TypeSubscriptionExpired, ipn.StatusExpired}},
		{"subscr_modify", "", want{ipn.TypeOther, ""}},
		{"recurring_payment", "Completed", want{ipn.TypeSubscriptionPayment, ipn.StatusCompleted}},
		{"recurring_payment_profile_created", "", want{ipn.TypeSubscriptionStarted, ipn.StatusCompleted}},
		{"recurring_payment_profile_cancel", "", want{ipn.TypeSubscriptionCanceled, ipn.StatusCanceled}},
		{"recurring_payment_skipped", "", want{ipn.TypeSubscriptionPayment, ipn.StatusFailed}},
		{"recurring_payment_failed", "", want{ipn.TypeSubscriptionPayment, ipn.StatusFailed}},
		{"recurring_payment_suspended", "", want{ipn.TypeSubscriptionPayment, ipn.StatusFailed}},
		{"recurring_payment_suspended_due_to_max_failed_payment", "", want{ipn.TypeSubscriptionPayment, ipn.StatusFailed}},
		{"recurring_payment_expired", "", want{ipn.TypeSubscriptionExpired, ipn.StatusExpired}},
		{"adjustment", "Completed", want{ipn.TypeReversal, ipn.StatusReversed}},
		{"new_case", "", want{ipn.TypeDispute, ipn.StatusPending}},
	}
	for _, tc := range cases {
		ev := gateway.PayPalEvent(map[string]string{"txn_type": tc.txnType, "payment_status": tc.status})
		if ev.Type != tc.want.typ || ev.Status != tc.want.status {
			t.Errorf("txn_type=%q payment_status=%q -> %s/%s, want %s/%s", tc.txnType, tc.status, ev.Type, ev.Status, tc.want.typ, tc.want.status)
		}
	}
	ev := gateway.PayPalEvent(map[string]string{"txn_type": "new_case", "case_type": "chargeback", "reason_code": "unauthorized"})
	if !strings.Contains(ev.GatewayStatus, "unauthorized") {
		t.Errorf("new_case gateway_status = %q, want the reason", ev.GatewayStatus)
	}
}

func TestPayPalNormalize(t *testing.T) {
	g, err := gateway.New(gateway.Config{Name: "pp", Kind: "paypal", VerifyURL: "http://127.0.0.1:1/x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		body, name, amount, currency, order string
	}{
		{"txn_type=web_accept&payment_status=Completed&first_name=Jos%E9&last_name=M%FCller&mc_gross=19.95&mc_currency=USD&custom=C-1", "José Müller", "19.95", "USD", "C-1"},
		{"charset=UTF-8&payment_status=Refunded&first_name=Jos%C3%A9&mc_gross=-5.00&mc_currency=EUR&invoice=I-1&custom=C-1&parent_txn_id=P", "José", "5.00", "EUR", "I-1"}, // a refund's amount is positive
		{"charset=Shift_JIS&payment_status=Completed&first_name=%93%FA%96%7B&mc_gross=1000&mc_currency=JPY", "日本", "1000", "JPY", ""},
		{"charset=ISO-8859-1&payment_status=Completed&first_name=Fran%E7ois&mc_gross=1.5&mc_currency=GBP&payment_date=10%3A00%3A00+Nov+24%2C+2026+PST", "François", "1.50", "GBP", ""},
	} {
		ev, err := g.Normalize(&ipn.Notification{Body: []byte(tc.body)})
		if err != nil {
			t.Fatalf("Normalize(%s): %v", tc.body, err)
		}
		if ev.CustomerName != tc.name || ev.Amount != tc.amount || ev.Currency != tc.currency || ev.OrderID != tc.order {
			t.Errorf("Normalize(%s) = %+v; want name %q amount %q %s order %q", tc.body, ev, tc.name, tc.amount, tc.currency, tc.order)
		}
	}
	// An amount that is not exact is refused, never rounded.
	if _, err := g.Normalize(&ipn.Notification{Body: []byte("payment_status=Completed&mc_gross=1.005&mc_currency=USD")}); !errors.Is(err, ipn.ErrMalformed) {
		t.Errorf("inexact amount: err = %v", err)
	}
}

func TestPayPalCheckAndConfig(t *testing.T) {
	g, _ := gateway.New(gateway.Config{Name: "pp", Kind: "paypal", VerifyURL: "http://localhost:9/x"})
	for body, want := range map[string]string{
		"txn_id=1&payment_status=Completed&ipn_track_id=abc": "track:abc",
		"txn_id=1&payment_status=Completed":                  "txn:1:Completed",
	} {
		if key, err := g.Check(&gateway.Inbound{Body: []byte(body)}); err != nil || key != want {
			t.Errorf("Check(%s) = %q, %v; want %q", body, key, err, want)
		}
	}
	for _, body := range []string{"", "a=%zz", "hello=world"} {
		if _, err := g.Check(&gateway.Inbound{Body: []byte(body)}); !errors.Is(err, ipn.ErrMalformed) {
			t.Errorf("Check(%q) err = %v, want ErrMalformed", body, err)
		}
	}
	if !g.Accepts("application/x-www-form-urlencoded") || g.Accepts("application/json") {
		t.Error("paypal accepts the wrong media types")
	}
	if _, err := gateway.New(gateway.Config{Name: "pp", Kind: "paypal", VerifyURL: "http://paypal.example/x"}); !errors.Is(err, ipn.ErrConfig) {
		t.Errorf("plain-http verify_url to a remote host accepted: %v", err)
	}
}

func FuzzPayPalForm(f *testing.F) {
	f.Add("txn_type=web_accept&payment_status=Completed&first_name=Jos%E9&mc_gross=19.95&mc_currency=USD")
	f.Add("charset=Shift_JIS&payment_status=Completed&first_name=%93%FA&mc_gross=1&mc_currency=JPY")
	f.Add("charset=bogus&payment_status=Refunded&mc_gross=-1e9&mc_currency=")
	g, _ := gateway.New(gateway.Config{Name: "pp", Kind: "paypal", VerifyURL: "http://127.0.0.1:1/x"})
	f.Fuzz(func(t *testing.T, body string) {
		fields, err := gateway.PayPalFields([]byte(body))
		if err != nil {
			return
		}
		for k, v := range fields {
			if !isUTF8(v) {
				t.Fatalf("field %q decoded to invalid UTF-8", k)
			}
		}
		g.Normalize(&ipn.Notification{Body: []byte(body)})
	})
}

func isUTF8(s string) bool { return strings.ToValidUTF8(s, "") == s }
