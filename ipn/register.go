package ipn

import (
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxOrderIDLen is the longest order id accepted (PayPal's invoice field).
const MaxOrderIDLen = 127

// FieldError reports an order field that fails validation. It wraps
// ErrMalformed; Field is the field's JSON name.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return "order " + e.Field + ": " + e.Problem }

// Unwrap returns ErrMalformed.
func (e *FieldError) Unwrap() error { return ErrMalformed }

// NewRegisteredOrder builds an order registered in advance (POST
// /api/orders): status awaiting_payment, the expected amount normalized to
// the currency's digits, zero totals and a first history entry. It fails
// with a *FieldError (wrapping ErrMalformed) naming the first bad field:
// id (empty, longer than MaxOrderIDLen bytes, not printable UTF-8, or
// with leading or trailing spaces), currency (not 3 to 5 letters),
// amount (not a positive exact decimal with at most the currency's
// digits), customer_email (no "@" between two non-empty parts, or
// spaces), description or metadata (not valid UTF-8). The currency is
// upper-cased; metadata is copied.
func NewRegisteredOrder(id, amount, currency, email, description string, metadata map[string]string, now time.Time) (Order, error) {
	if err := checkOrderID(id); err != nil {
		return Order{}, err
	}
	cur := strings.ToUpper(currency)
	if !validCurrency(cur) || !KnownCurrency(cur) {
		return Order{}, &FieldError{"currency", "must be an ISO 4217 code or a known coin (USD, EUR, JPY, BTC, ...)"}
	}
	amt, err := NormalizeAmount(amount, cur)
	if err != nil {
		return Order{}, &FieldError{"amount", fmt.Sprintf("must be a decimal number with at most %d fraction digits for %s", CurrencyDigits(cur), cur)}
	}
	if v, err := amountOf(amt, cur); err != nil || v.Sign() <= 0 {
		return Order{}, &FieldError{"amount", "must be positive"}
	}
	if !validEmail(email) {
		return Order{}, &FieldError{"customer_email", "must be an email address"}
	}
	if !utf8.ValidString(description) {
		return Order{}, &FieldError{"description", "must be UTF-8 text"}
	}
	for k, v := range metadata {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return Order{}, &FieldError{"metadata", "keys must be non-empty UTF-8 text, values UTF-8 text"}
		}
	}
	zero := formatAmount(zeroAmount(), cur)
	return Order{
		ID:            id,
		Status:        OrderAwaitingPayment,
		Registered:    true,
		Amount:        amt,
		Currency:      cur,
		CustomerEmail: email,
		Description:   description,
		Metadata:      maps.Clone(metadata),
		Paid:          zero,
		Refunded:      zero,
		Flags:         []string{},
		TxnIDs:        []string{},
		History:       []OrderChange{{At: now, To: OrderAwaitingPayment, Reason: "registered: expecting " + amt + " " + cur}},
		CreatedAt:     now,
		UpdatedAt:     now,
	}, nil
}

func checkOrderID(id string) error {
	switch {
	case id == "":
		return &FieldError{"id", "is required"}
	case len(id) > MaxOrderIDLen:
		return &FieldError{"id", fmt.Sprintf("must be at most %d bytes", MaxOrderIDLen)}
	case !utf8.ValidString(id):
		return &FieldError{"id", "must be UTF-8 text"}
	case strings.TrimSpace(id) != id:
		return &FieldError{"id", "must not start or end with spaces"}
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return &FieldError{"id", "must be printable text"}
		}
	}
	return nil
}

func validCurrency(c string) bool {
	if len(c) < 3 || len(c) > 5 {
		return false
	}
	for _, r := range c {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}

func validEmail(e string) bool {
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" || domain == "" || len(e) > 254 || !utf8.ValidString(e) {
		return false
	}
	return !strings.ContainsFunc(e, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}
