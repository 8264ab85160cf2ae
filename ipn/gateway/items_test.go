package gateway

import (
	"encoding/json"
	"testing"
)

// TestItemsFromPayments: what a payment says was bought (SPEC §11) and
// the period a subscription payment pays, as each gateway sends them.
func TestItemsFromPayments(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"paypal button", payPalItems(map[string]string{"item_number": "ebook", "quantity": "2"}), "ebook:2"},
		{"paypal button, no quantity", payPalItems(map[string]string{"item_number": "ebook"}), "ebook:1"},
		{"paypal cart", payPalItems(map[string]string{"num_cart_items": "2", "item_number1": "a", "quantity1": "1",
			"item_number2": "b", "quantity2": "3"}), "a:1,b:3"},
		{"paypal cart, same twice", payPalItems(map[string]string{"num_cart_items": "2", "item_number1": "a", "item_number2": "a"}), "a:2"},
		{"paypal none", payPalItems(map[string]string{}), ""},
		{"paypal bad quantity", payPalItems(map[string]string{"item_number": "a", "quantity": "-1"}), "!a:-1"},
		{"stripe products", itemsText("ebook, font ,font"), "ebook:1,font:2"},
		{"stripe bad id", itemsText("e book"), "!e book"},
		{"generic", jsonItems(json.RawMessage(`[{"product":"a","quantity":2},{"product":"b"},{"product":"c","quantity":"3"}]`)), "a:2,b:1,c:3"},
		{"generic not a list", jsonItems(json.RawMessage(`{"product":"a"}`)), `!{"product":"a"}`},
		{"generic null", jsonItems(json.RawMessage(`null`)), ""},
		{"period_end", periodEnd("2027-01-01T10:00:00+01:00"), "2027-01-01T09:00:00Z"},
		{"period_end bad", periodEnd("tomorrow"), ""},
		{"paypal date PST", payPalDate("03:00:00 Jan 05, 2027 PST"), "2027-01-05T11:00:00Z"},
		{"paypal date PDT", payPalDate("03:00:00 Jul 05, 2027 PDT"), "2027-07-05T10:00:00Z"},
		{"paypal date bad", payPalDate("soon"), ""},
		{"stripe invoice", stripePeriodEnd(&stripeObject{PeriodEnd: 1700000000, Lines: func() (l struct {
			Data []struct {
				Period struct {
					End int64 `json:"end"`
				} `json:"period"`
			} `json:"data"`
		}) {
			json.Unmarshal([]byte(`{"data":[{"period":{"end":1800000000}}]}`), &l)
			return l
		}()}), "2027-01-15T08:00:00Z"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}
