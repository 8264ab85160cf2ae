package ipn

import (
	"fmt"
	"strings"

	"github.com/cockroachdb/apd/v3"
	"golang.org/x/text/currency"
)

// zeroDigit and threeDigit list the ISO 4217 currencies whose minor unit is
// not two digits. Everything else, unless listed in cryptoDigits, has two.
var (
	zeroDigit = map[string]bool{
		"BIF": true, "CLP": true, "DJF": true, "GNF": true, "ISK": true, "JPY": true,
		"KMF": true, "KRW": true, "PYG": true, "RWF": true, "UGX": true, "UYI": true,
		"VND": true, "VUV": true, "XAF": true, "XOF": true, "XPF": true,
	}
	threeDigit = map[string]bool{
		"BHD": true, "IQD": true, "JOD": true, "KWD": true, "LYD": true, "OMR": true, "TND": true,
	}
	cryptoDigits = map[string]int{
		"BTC": 8, "LTC": 8, "BCH": 8, "DOGE": 8, "DASH": 8, "ZEC": 8, "ETH": 18, "USDT": 6, "USDC": 6,
		"XMR": 12, "XRP": 6, "TRX": 6, "ADA": 6, "SOL": 9, "XLM": 7, "DAI": 18, "BNB": 18, "POL": 18,
		"MATIC": 18, "TON": 9, "SHIB": 18, "AVAX": 18, "DOT": 10, "LTCT": 8,
	}
	// newerISO are ISO 4217 codes newer than the tables of
	// golang.org/x/text/currency.
	newerISO = map[string]bool{"MRU": true, "STN": true, "VES": true, "VED": true, "SLE": true, "ZWG": true, "XCG": true}
)

// KnownCurrency reports whether code (upper case) is an ISO 4217 currency
// or a coin in ipnd's table of crypto currencies. XXX ("no currency") is
// not one.
func KnownCurrency(code string) bool {
	if _, ok := cryptoDigits[code]; ok || newerISO[code] {
		return true
	}
	if code == "XXX" || len(code) != 3 || strings.ToUpper(code) != code {
		return false
	}
	_, err := currency.ParseISO(code)
	return err == nil
}

// CheckMoney reports why the money of an event that changes orders
// cannot be applied, nil when it can: a currency that is neither ISO 4217
// nor a known coin (a coin ipnd does not know the digits of could only
// be counted wrong), an amount that is not an exact decimal with at most
// the currency's digits, a one-off payment of zero or less, or a
// subscription payment below zero (a trial's invoice of 0 is fine).
// Refund, reversal and dispute amounts may carry a sign (PayPal's
// negative mc_gross): only their digits are checked.
func CheckMoney(ev *Event) error {
	if !actionable(ev.Type) {
		return nil
	}
	cur := ev.Currency
	if cur != "" && !KnownCurrency(cur) {
		return fmt.Errorf("unknown currency %q (not ISO 4217, not a known coin)", cur)
	}
	if ev.Amount == "" {
		if cur != "" && ev.Type == TypePayment && ev.Status == StatusCompleted {
			// A currency but no sum: it would count as paid 0. (A gateway
			// that reports neither, as BTCPay's settled invoices, is
			// checked against the registered order instead.)
			return fmt.Errorf("a completed payment in %s without an amount is not applied", cur)
		}
		return nil
	}
	var v *apd.Decimal
	if cur == "" {
		// No currency: the order's applies later; the sign and the form
		// can be checked now.
		d, ok := parseDecimal(ev.Amount, false)
		if !ok {
			return fmt.Errorf("amount %q is not an exact decimal", ev.Amount)
		}
		v = d
	} else {
		d, err := amountOf(ev.Amount, cur)
		if err != nil {
			return fmt.Errorf("amount %q is not an exact decimal with at most %d fraction digits for %s",
				ev.Amount, CurrencyDigits(cur), cur)
		}
		v = d
	}
	switch {
	case ev.Type == TypePayment && v.Sign() <= 0:
		return fmt.Errorf("a payment of %s %s (zero or less) is not applied", ev.Amount, cur)
	case ev.Type == TypeSubscriptionPayment && v.Sign() < 0:
		return fmt.Errorf("a subscription payment of %s %s (below zero) is not applied", ev.Amount, cur)
	}
	return nil
}

// CurrencyDigits returns the number of fraction digits of the currency with
// the given code (case-insensitive): 0 for JPY, 3 for KWD, 8 for BTC, 2 for
// everything else.
func CurrencyDigits(code string) int {
	c := strings.ToUpper(code)
	switch {
	case zeroDigit[c]:
		return 0
	case threeDigit[c]:
		return 3
	}
	if d, ok := cryptoDigits[c]; ok {
		return d
	}
	return 2
}
