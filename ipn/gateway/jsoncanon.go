package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"ipnd/ipn"
)

// SortedJSON re-serialises a JSON object the way a Node.js sender does when
// it signs JSON.stringify of the object with its keys sorted (GATEWAYS.md
// §7.2, NOWPayments). Two forms exist:
//
//   - recursive = false: JSON.stringify(obj, Object.keys(obj).sort()). The
//     sorted top-level key list is an allow-list applied at every nesting
//     level, so a nested object keeps only the keys that also exist at the
//     top level, in that list's order ({"fee":{"currency":..}} becomes
//     "fee":{} unless "currency" is a top-level key).
//   - recursive = true: every object's own keys sorted, at every level.
//
// Keys sort by UTF-16 code units (JavaScript's default sort). Numbers are
// written as JavaScript writes them (shortest round-trip form, exponent
// below 1e-6 and from 1e21 on, -0 as 0, out-of-range as null); strings
// escape only '"', '\\' and control characters, as JSON.stringify does.
// A duplicated key keeps its last value, as JSON.parse does. Whitespace and
// key order of the input do not matter.
//
// The only float64 here reproduces the sender's number formatting for the
// MAC; amounts are never read from it. Known divergence: a lone UTF-16
// surrogate escape ("\ud800") decodes to U+FFFD here but survives in
// JavaScript. A body that is not exactly one JSON object is ErrMalformed.
func SortedJSON(body []byte, recursive bool) ([]byte, error) {
	obj, err := decodeJSONObject(body)
	if err != nil {
		return nil, err
	}
	return sortedJSONOf(obj, recursive), nil
}

func sortedJSONOf(obj map[string]any, recursive bool) []byte {
	var allow []string
	if !recursive {
		allow = sortedKeys(obj)
	}
	return appendJSValue(make([]byte, 0, 512), obj, allow)
}

// decodeJSONObject parses body as exactly one JSON object, numbers kept as
// json.Number.
func decodeJSONObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: body is not a JSON object", ipn.ErrMalformed)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ipn.ErrMalformed)
	}
	return obj, nil
}

// sortedKeys returns the keys of m in JavaScript's default sort order.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareUTF16)
	return keys
}

// compareUTF16 orders strings by their UTF-16 code units, which differs
// from byte order for characters above U+FFFF against U+E000..U+FFFF.
func compareUTF16(a, b string) int {
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

// appendJSValue writes v as JSON.stringify would. allow, when non-nil, is
// the replacer allow-list: every object writes only those keys it has, in
// allow's order. With allow nil every object writes its keys sorted.
func appendJSValue(b []byte, v any, allow []string) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case string:
		return appendJSString(b, v)
	case json.Number:
		return appendJSNumber(b, v)
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSValue(b, e, allow)
		}
		return append(b, ']')
	case map[string]any:
		keys := allow
		if keys == nil {
			keys = sortedKeys(v)
		}
		b = append(b, '{')
		first := true
		for _, k := range keys {
			e, ok := v[k]
			if !ok {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJSString(b, k)
			b = append(b, ':')
			b = appendJSValue(b, e, allow)
		}
		return append(b, '}')
	}
	return append(b, "null"...) // decodeJSONObject produces no other types
}

// appendJSNumber writes a JSON number the way JavaScript's Number
// toString does: the shortest digits that round-trip to the same double.
func appendJSNumber(b []byte, n json.Number) []byte {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil && !math.IsInf(f, 0) {
		// Cannot happen for a number the JSON decoder accepted.
		return append(b, "null"...)
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(b, "null"...) // JSON.parse gives Infinity, JSON.stringify null
	}
	if f == 0 {
		return append(b, '0') // also -0
	}
	format := byte('f')
	if a := math.Abs(f); a < 1e-6 || a >= 1e21 {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// Go writes a two-digit exponent ("1e-07"), JavaScript does not.
		e := b[start:]
		if n := len(e); n >= 4 && e[n-4] == 'e' && e[n-2] == '0' {
			e[n-2] = e[n-1]
			b = b[:len(b)-1]
		}
	}
	return b
}

const lowerHex = "0123456789abcdef"

// appendJSString quotes s as JSON.stringify does: only '"', '\\' and
// control characters are escaped (U+2028, U+2029, '<', '>' and '&' are
// not, unlike Go's encoder).
func appendJSString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch r {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			if r < 0x20 {
				b = append(b, '\\', 'u', '0', '0', lowerHex[r>>4], lowerHex[r&0xF])
			} else {
				b = utf8.AppendRune(b, r)
			}
		}
	}
	return append(b, '"')
}

// jsonLookup follows a dotted path ("data.object.id", "items.0.sku") into
// a decoded JSON value; a numeric segment indexes an array.
func jsonLookup(v any, path []string) (any, bool) {
	for _, seg := range path {
		switch c := v.(type) {
		case map[string]any:
			e, ok := c[seg]
			if !ok {
				return nil, false
			}
			v = e
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// scalarText is the text of a JSON string, number (exactly as sent) or
// boolean; objects, arrays and null give "".
func scalarText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return string(v)
	case bool:
		return strconv.FormatBool(v)
	}
	return ""
}

// splitPath splits a dotted JSON path; "" is the empty path.
func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, ".")
}
