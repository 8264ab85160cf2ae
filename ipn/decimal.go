package ipn

import (
	"fmt"
	"math/big"
	"strings"
)

// minorUnits parses amount, an exact decimal string ("19.99", "-5",
// "0.00012"), into an integer number of the currency's minor units
// (1999, -500, 12000 for BTC). It fails, wrapping ErrMalformed, on
// anything NormalizeAmount refuses: exponents, more fraction digits than
// the currency has, text that is not a number. It never goes through a
// float.
func minorUnits(amount, currency string) (*big.Int, error) {
	norm, err := NormalizeAmount(amount, currency)
	if err != nil {
		return nil, err
	}
	v, ok := new(big.Int).SetString(strings.Replace(norm, ".", "", 1), 10)
	if !ok {
		return nil, fmt.Errorf("%w: amount %q is not a decimal number", ErrMalformed, amount)
	}
	return v, nil
}

// formatUnits renders an integer number of minor units as an exact
// decimal with the currency's digits: 1999 USD is "19.99", 1999 JPY
// "1999", 1250 KWD "1.250".
func formatUnits(v *big.Int, currency string) string {
	if s, err := FormatMinor(v.String(), currency); err == nil {
		return s
	}
	// FormatMinor refuses more than 40 digits, which a sum of many large
	// amounts can reach; the rendering is the same.
	d := CurrencyDigits(currency)
	digits := new(big.Int).Abs(v).String()
	if len(digits) <= d {
		digits = strings.Repeat("0", d-len(digits)+1) + digits
	}
	s := digits
	if d > 0 {
		s = digits[:len(digits)-d] + "." + digits[len(digits)-d:]
	}
	if v.Sign() < 0 {
		s = "-" + s
	}
	return s
}
