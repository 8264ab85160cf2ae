package ipn

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Item is one line of an order: a product (a [[product]] id of the
// config) and how many units of it were bought.
type Item struct {
	Product  string `json:"product"`
	Quantity int    `json:"quantity"`
}

// MaxItems bounds the units one order delivers (links and keys issued in
// one transaction).
const MaxItems = 100

// FlagUnknownProduct: a paid order names a product the config does not
// have, so nothing could be delivered (SPEC §11).
const FlagUnknownProduct = "unknown_product"

// FormatItems writes items as Event.Items does: "id:n,id:n".
func FormatItems(items []Item) string {
	parts := make([]string, 0, len(items))
	for _, it := range items {
		parts = append(parts, it.Product+":"+strconv.Itoa(it.Quantity))
	}
	return strings.Join(parts, ",")
}

// ParseItems reads Event.Items (or a Stripe metadata.products list): ids
// separated by commas, each optionally followed by ":quantity" (1 when
// absent). The same product named twice adds up. Blank entries are
// skipped.
func ParseItems(s string) ([]Item, error) {
	var out []Item
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, qs, hasQ := strings.Cut(part, ":")
		id = strings.TrimSpace(id)
		q := 1
		if hasQ {
			n, err := strconv.Atoi(strings.TrimSpace(qs))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("item %q: quantity must be a positive integer", part)
			}
			q = n
		}
		if err := CheckProductID(id); err != nil {
			return nil, err
		}
		total += q
		if total > MaxItems {
			return nil, fmt.Errorf("more than %d units", MaxItems)
		}
		out = AddItem(out, Item{Product: id, Quantity: q})
	}
	return out, nil
}

// AddItem adds it to items (summing the quantity of a product already
// there).
func AddItem(items []Item, it Item) []Item {
	for i := range items {
		if items[i].Product == it.Product {
			items[i].Quantity += it.Quantity
			return items
		}
	}
	return append(items, it)
}

// CheckProductID reports whether id can name a product: 1-64 bytes of
// letters, digits, '-', '_' or '.'.
func CheckProductID(id string) error {
	if id == "" || len(id) > 64 {
		return errors.New("product id must be 1-64 characters")
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("product id %q: only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

// Delivered is one unit bought as the customer and the shop see it: the
// download link and, where the product has one, the license key.
type Delivered struct {
	Product       string    `json:"product"`
	ProductName   string    `json:"product_name,omitempty"`
	DownloadURL   string    `json:"download_url,omitempty"`
	DownloadsLeft int       `json:"downloads_left"`
	ExpiresAt     time.Time `json:"expires_at"`
	LicenseKey    string    `json:"license_key,omitempty"`
}
