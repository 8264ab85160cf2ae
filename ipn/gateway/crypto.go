package gateway

import (
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"strings"

	"ipnd/ipn"
)

// Helpers shared by the crypto gateway kinds (coinbase-commerce, btcpay,
// coinpayments, nowpayments) and the generic hmac kind.

// hexSignature decodes the hex MAC in a header value (either case, as
// GATEWAYS.md §0.2 allows). The reason in the error names the header, never
// the value.
func hexSignature(value, header string, size int) ([]byte, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, fmt.Errorf("%w: missing %s header", ipn.ErrBadSignature, header)
	}
	sig, err := hex.DecodeString(value)
	if err != nil || len(sig) != size {
		return nil, fmt.Errorf("%w: garbled %s header", ipn.ErrBadSignature, header)
	}
	return sig, nil
}

// macMatchesAny reports whether the HMAC of any content under any key
// equals sig, comparing in constant time. It tries every combination, so
// the time taken does not depend on which one matched.
func macMatchesAny(h func() hash.Hash, keys [][]byte, sig []byte, contents ...[]byte) bool {
	ok := false
	for _, k := range keys {
		for _, c := range contents {
			m := hmac.New(h, k)
			m.Write(c)
			if hmac.Equal(m.Sum(nil), sig) {
				ok = true
			}
		}
	}
	return ok
}

func rawKeys(secrets []string) [][]byte {
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		keys[i] = []byte(s)
	}
	return keys
}

// cryptoAmount normalizes an amount sent by a crypto gateway: like
// NormalizeAmount (exactly the currency's digits), except that a number
// with more significant fraction digits than ipnd's table gives the
// currency (a coin ipnd does not know, such as "USDTTRC20" or "XRP") is
// kept exactly as sent, trailing zeros trimmed, rather than refused. JSON
// exponents are expanded digit for digit. Never a float.
func cryptoAmount(s, currency string) (string, error) {
	p, ok := ipn.PlainDecimal(strings.TrimSpace(s))
	if !ok {
		return "", fmt.Errorf("%w: amount %q is not a decimal number", ipn.ErrMalformed, s)
	}
	if a, err := ipn.NormalizeAmount(p, currency); err == nil {
		return a, nil
	}
	return p, nil
}

// paymentFlag compares what arrived with what was due: FlagUnderpaid when
// less (but something) arrived, FlagOverpaid when more, "" otherwise or
// when either is missing or not a number.
func paymentFlag(paid, due string) string {
	c, ok := ipn.CompareDecimal(paid, due)
	if !ok {
		return ""
	}
	switch {
	case c > 0:
		return ipn.FlagOverpaid
	case c < 0:
		if z, _ := ipn.CompareDecimal(paid, "0"); z > 0 {
			return ipn.FlagUnderpaid
		}
	}
	return ""
}

// joinFlags joins the non-empty, distinct flags with commas.
func joinFlags(flags ...string) string {
	var out []string
	for _, f := range flags {
		if f != "" && !strings.Contains(","+strings.Join(out, ",")+",", ","+f+",") {
			out = append(out, f)
		}
	}
	return strings.Join(out, ",")
}

// looseString is a JSON string or number kept as its exact text; null and
// absent leave it "". Gateways are not always consistent about which of
// the two they send for ids and amounts.
type looseString string

func (s *looseString) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = looseString(v)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*s = looseString(n)
	return nil
}

// metaText returns the first non-empty scalar among the given keys of a
// free-form metadata object.
func metaText(meta map[string]any, keys ...string) string {
	for _, k := range keys {
		if s := scalarText(meta[k]); s != "" {
			return s
		}
	}
	return ""
}
