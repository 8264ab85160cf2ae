package ipn_test

import (
	"math/big"
	"regexp"
	"strings"
	"testing"

	"ipnd/ipn"
)

func TestAmounts(t *testing.T) {
	for _, tc := range []struct{ in, cur, want string }{
		{"1999", "USD", "19.99"}, {"5", "USD", "0.05"}, {"0", "USD", "0.00"}, {"1999", "JPY", "1999"},
		{"1234", "KWD", "1.234"}, {"-250", "EUR", "-2.50"}, {"12000", "BTC", "0.00012000"},
	} {
		if got, err := ipn.FormatMinor(tc.in, tc.cur); err != nil || got != tc.want {
			t.Errorf("FormatMinor(%s, %s) = %q, %v; want %q", tc.in, tc.cur, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, cur, want string }{
		{"19.99", "USD", "19.99"}, {"19.9", "usd", "19.90"}, {"19", "USD", "19.00"}, {"19.990", "USD", "19.99"},
		{"-0.5", "USD", "-0.50"}, {"100", "JPY", "100"}, {"0.1", "KWD", "0.100"},
	} {
		if got, err := ipn.NormalizeAmount(tc.in, tc.cur); err != nil || got != tc.want {
			t.Errorf("NormalizeAmount(%s, %s) = %q, %v; want %q", tc.in, tc.cur, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "-", "1.", ".5", "1e5", "0x10", "1.999", "NaN", "1,00", " 1"} {
		if got, err := ipn.NormalizeAmount(bad, "USD"); err == nil {
			t.Errorf("NormalizeAmount(%q) = %q, want error", bad, got)
		}
	}
}

func FuzzAmount(f *testing.F) {
	f.Add("19.99", "USD")
	f.Add("-0001", "JPY")
	f.Add("19.990", "USD")
	f.Add("0.00012", "BTC")
	f.Add("1.2345", "KWD")
	plain := regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
	f.Fuzz(func(t *testing.T, s, cur string) {
		digits := ipn.CurrencyDigits(cur)
		got, err := ipn.NormalizeAmount(s, cur)
		// Oracle: math/big's exact rationals, independent of the code under test.
		want, isNum := new(big.Rat).SetString(s)
		isNum = isNum && plain.MatchString(s) && len(s) <= 40
		if err != nil {
			if isNum {
				scaled := new(big.Rat).Mul(want, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits)), nil)))
				if scaled.IsInt() {
					t.Fatalf("NormalizeAmount(%q, %q) refused an amount with at most %d digits: %v", s, cur, digits, err)
				}
			}
			return
		}
		if !isNum {
			t.Fatalf("NormalizeAmount(%q, %q) = %q, accepted what is not a plain decimal", s, cur, got)
		}
		if r, _ := new(big.Rat).SetString(got); r == nil || r.Cmp(want) != 0 {
			t.Fatalf("NormalizeAmount(%q, %q) = %q: not the same value", s, cur, got)
		}
		_, frac, _ := strings.Cut(got, ".")
		if len(frac) != digits {
			t.Fatalf("NormalizeAmount(%q, %q) = %q: %d fraction digits, want %d", s, cur, got, len(frac), digits)
		}
		again, err := ipn.NormalizeAmount(got, cur)
		if err != nil || again != got {
			t.Fatalf("NormalizeAmount(%q) = %q, not a fixed point (%q, %v)", s, got, again, err)
		}
		if m, err := ipn.FormatMinor(strings.Replace(got, ".", "", 1), cur); err != nil || m != got {
			t.Fatalf("FormatMinor of %q = %q, %v", got, m, err)
		}
	})
}
