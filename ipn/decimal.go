package ipn

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cockroachdb/apd/v3"
)

// Every amount in ipnd is an exact decimal: parsed, compared, added and
// formatted here, with github.com/cockroachdb/apd/v3, never through a
// float. Amounts travel as strings with the currency's own number of
// digits ("19.99" USD, "1999" JPY, "0.00012000" BTC).

// maxAmountLen bounds the text of a plain amount and maxDecimalLen that
// of a JSON number (digits, sign, point, exponent) and its exponent: no
// real payment needs more, and they bound the work.
const (
	maxAmountLen  = 40
	maxDecimalLen = 64
)

// decimalCtx does the arithmetic: sums of amounts of at most
// maxDecimalLen digits stay exact far beyond any real order.
var decimalCtx = apd.BaseContext.WithPrecision(200)

// parseDecimal reads a plain decimal ("19.99", "-5", "0.00012", "007"):
// an optional minus sign, digits, and optionally a point followed by
// digits. With exponent set it also takes a JSON number's exponent
// ("1e-7", "-2.5E+3"). Anything else (spaces, "+", ".5", "5.", NaN,
// Infinity, more than maxAmountLen characters, or maxDecimalLen with an
// exponent) is refused.
func parseDecimal(s string, exponent bool) (*apd.Decimal, bool) {
	if s == "" || len(s) > maxAmountLen && !exponent || len(s) > maxDecimalLen {
		return nil, false
	}
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp && (!exponent || !validExponent(exp)) {
		return nil, false
	}
	int, frac, hasDot := strings.Cut(strings.TrimPrefix(mant, "-"), ".")
	if !digitsOnly(int) || hasDot && !digitsOnly(frac) {
		return nil, false
	}
	d, _, err := apd.NewFromString(s)
	if err != nil || d.Form != apd.Finite {
		return nil, false
	}
	return d, true
}

func validExponent(e string) bool {
	n, err := strconv.Atoi(e)
	return err == nil && digitsOnly(strings.TrimLeft(e, "+-")) && n <= maxDecimalLen && n >= -maxDecimalLen
}

func digitsOnly(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// quantize rounds nothing: it rewrites d with exactly digits fraction
// digits, and fails when that would drop a digit that is not zero.
func quantize(d *apd.Decimal, digits int) (*apd.Decimal, bool) {
	q := new(apd.Decimal)
	cond, err := decimalCtx.Quantize(q, d, -int32(digits))
	if err != nil || cond.Inexact() || cond.Rounded() && q.Cmp(d) != 0 {
		return nil, false
	}
	if q.IsZero() {
		q.Negative = false // no "-0.00"
	}
	return q, true
}

// NormalizeAmount checks that s is a plain decimal number ("19.99", "-5",
// "0.00012") and rewrites it with exactly the currency's digits. It refuses
// exponents, more fraction digits than the currency has (unless they are
// zeros), and anything that is not a number; the error wraps ErrMalformed.
func NormalizeAmount(s string, currency string) (string, error) {
	d, ok := parseDecimal(s, false)
	if !ok {
		return "", fmt.Errorf("%w: amount %q is not a decimal number", ErrMalformed, s)
	}
	digits := CurrencyDigits(currency)
	q, ok := quantize(d, digits)
	if !ok {
		return "", fmt.Errorf("%w: amount %q has more than %d fraction digits", ErrMalformed, s, digits)
	}
	return q.Text('f'), nil
}

// FormatMinor turns an integer amount in the currency's smallest unit (as
// Stripe sends it, e.g. "1999" for USD 19.99) into an exact decimal string.
// Anything but an optionally signed integer of at most 40 digits wraps
// ErrMalformed.
func FormatMinor(minor string, currency string) (string, error) {
	if !digitsOnly(strings.TrimPrefix(minor, "-")) || len(strings.TrimPrefix(minor, "-")) > maxAmountLen {
		return "", fmt.Errorf("%w: amount %q is not an integer", ErrMalformed, minor)
	}
	d, _, err := apd.NewFromString(minor)
	if err != nil {
		return "", fmt.Errorf("%w: amount %q is not an integer", ErrMalformed, minor)
	}
	d.Exponent = -int32(CurrencyDigits(currency))
	return formatAmount(d, currency), nil
}

// amountOf parses amount, an exact decimal string, as a decimal with
// exactly the currency's digits. It fails, wrapping ErrMalformed, on
// anything NormalizeAmount refuses.
func amountOf(amount, currency string) (*apd.Decimal, error) {
	d, ok := parseDecimal(amount, false)
	if !ok {
		return nil, fmt.Errorf("%w: amount %q is not a decimal number", ErrMalformed, amount)
	}
	q, ok := quantize(d, CurrencyDigits(currency))
	if !ok {
		return nil, fmt.Errorf("%w: amount %q has more than %d fraction digits", ErrMalformed, amount, CurrencyDigits(currency))
	}
	return q, nil
}

// formatAmount renders d with the currency's digits: 19.99 USD is
// "19.99", 1999 JPY "1999", 1.25 KWD "1.250". d is exact in that
// currency (a sum or difference of amountOf values).
func formatAmount(d *apd.Decimal, currency string) string {
	q := new(apd.Decimal)
	decimalCtx.Quantize(q, d, -int32(CurrencyDigits(currency)))
	if q.IsZero() {
		q.Negative = false
	}
	return q.Text('f')
}

// zeroAmount is a new zero to add amounts to.
func zeroAmount() *apd.Decimal { return new(apd.Decimal) }

// addAmount sets d to d + x and returns d.
func addAmount(d, x *apd.Decimal) *apd.Decimal {
	decimalCtx.Add(d, d, x)
	return d
}

// PlainDecimal rewrites a decimal or JSON number ("10.50", "1e-7",
// "-2.5E+3", "007") as a plain decimal without exponent, leading zeros or
// trailing fraction zeros ("10.5", "0.0000001", "-2500", "7"). ok is
// false for anything else.
func PlainDecimal(num string) (string, bool) {
	d, ok := parseDecimal(num, true)
	if !ok {
		return "", false
	}
	r := new(apd.Decimal)
	r.Reduce(d)
	if r.IsZero() {
		return "0", true
	}
	if r.Exponent > 0 { // Reduce keeps 2500 as 25e2
		decimalCtx.Quantize(r, r, 0)
	}
	return r.Text('f'), true
}

// CompareDecimal compares two decimals that PlainDecimal accepts; ok is
// false when either is not one.
func CompareDecimal(a, b string) (cmp int, ok bool) {
	da, oka := parseDecimal(a, true)
	db, okb := parseDecimal(b, true)
	if !oka || !okb {
		return 0, false
	}
	return da.Cmp(db), true
}
