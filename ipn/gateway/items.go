package gateway

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"ipnd/ipn"
)

// What a payment says was bought (SPEC §11), as ipn.Event.Items: the
// items normalized ("id:n,id:n"), or, when they cannot be read, the text
// as sent (bounded), so that a paid order goes to review
// (unknown_product) rather than silently undelivered.

const maxItemsText = 1024

// itemsText normalizes a list of product ids, each optionally ":n".
func itemsText(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	items, err := ipn.ParseItems(s)
	if err != nil {
		return invalidItems(s)
	}
	return ipn.FormatItems(items)
}

// invalidItems keeps unreadable items as text ParseItems refuses.
func invalidItems(s string) string {
	if len(s) > maxItemsText {
		s = s[:maxItemsText]
	}
	return "!" + strings.ToValidUTF8(s, "?")
}

// payPalItems reads item_number (with quantity) of a single-item button
// and item_numberN/quantityN of a cart (num_cart_items).
func payPalItems(f map[string]string) string {
	var parts []string
	add := func(id, qty string) {
		id, qty = strings.TrimSpace(id), strings.TrimSpace(qty)
		if id == "" {
			return
		}
		if qty == "" {
			qty = "1"
		}
		parts = append(parts, id+":"+qty)
	}
	n, _ := strconv.Atoi(f["num_cart_items"])
	if n > 0 || f["item_number1"] != "" {
		for i := 1; i <= max(n, 1) && i <= ipn.MaxItems; i++ {
			add(f["item_number"+strconv.Itoa(i)], f["quantity"+strconv.Itoa(i)])
		}
	} else {
		add(f["item_number"], f["quantity"])
	}
	return itemsText(strings.Join(parts, ","))
}

// jsonItems reads the generic kinds' data.items: [{"product", "quantity"}].
func jsonItems(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var items []struct {
		Product  string          `json:"product"`
		Quantity json.RawMessage `json:"quantity"`
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return invalidItems(string(raw))
	}
	var parts []string
	for _, it := range items {
		q := strings.Trim(strings.TrimSpace(string(it.Quantity)), `"`)
		if q == "" || q == "null" {
			q = "1"
		}
		parts = append(parts, it.Product+":"+q)
	}
	if len(parts) == 0 {
		return ""
	}
	return itemsText(strings.Join(parts, ","))
}

// periodEnd normalizes an RFC 3339 time to UTC ("" when it is not one).
func periodEnd(s string) string {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(s))
	if err != nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// payPalDate reads PayPal's dates ("10:00:00 Nov 24, 2026 PST") as RFC
// 3339 UTC ("" when it is not one). PayPal writes Pacific time, PST or
// PDT.
func payPalDate(s string) string {
	s = strings.TrimSpace(s)
	off := map[string]int{"PST": -8, "PDT": -7}
	for zone, h := range off {
		if rest, ok := strings.CutSuffix(s, " "+zone); ok {
			t, err := time.ParseInLocation("15:04:05 Jan 2, 2006", rest, time.FixedZone(zone, h*3600))
			if err != nil {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		}
	}
	return ""
}
