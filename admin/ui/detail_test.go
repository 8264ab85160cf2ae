package ui

import (
	"testing"
	"unicode/utf8"
)

// FuzzDecodeBody: any body, content type and kind decodes to valid
// UTF-8 without a panic.
func FuzzDecodeBody(f *testing.F) {
	f.Add([]byte("charset=windows-1252&first_name=Jos%E9"), "application/x-www-form-urlencoded", "paypal")
	f.Add([]byte("a=%zz&b"), "application/x-www-form-urlencoded; charset=x-unknown", "")
	f.Add([]byte("caf\xe9"), "text/plain; charset=iso-8859-1", "")
	f.Add([]byte("{\"a\":\"\xff\"}"), "application/json", "stripe")
	f.Add([]byte("x=%81%8D"), "application/x-www-form-urlencoded; charset=shift_jis", "")
	f.Fuzz(func(t *testing.T, body []byte, ct, kind string) {
		b := decodeBody(body, ct, kind)
		if !utf8.ValidString(b.Text) {
			t.Fatalf("text not valid UTF-8: %q", b.Text)
		}
		for _, kv := range b.Form {
			if !utf8.ValidString(kv[0]) || !utf8.ValidString(kv[1]) {
				t.Fatalf("form field not valid UTF-8: %q", kv)
			}
		}
		if b.Charset == "" {
			t.Fatal("no charset named")
		}
	})
}

func TestDecodeBody(t *testing.T) {
	for _, tc := range []struct {
		body, ct, kind, want, charset string
	}{
		{"caf\xe9", "text/plain; charset=iso-8859-1", "", "café", "windows-1252"},
		{"café", "text/plain", "", "café", "utf-8"},
		{"caf\xe9", "application/json", "", "café", "windows-1252"},
		{"n=caf%C3%A9", "application/x-www-form-urlencoded; charset=utf-8", "paypal", "café", "utf-8"},
		{"n=caf%E9&charset=ISO-8859-1", "application/x-www-form-urlencoded", "", "café", "windows-1252"},
		{"n=%8A", "application/x-www-form-urlencoded", "paypal", "Š", "windows-1252"},
		{"n=caf%C3%A9", "application/x-www-form-urlencoded", "stripe", "café", "utf-8"},
	} {
		b := decodeBody([]byte(tc.body), tc.ct, tc.kind)
		got := b.Text
		if b.Form != nil {
			for _, kv := range b.Form {
				if kv[0] == "n" {
					got = kv[1]
				}
			}
		}
		if got != tc.want || b.Charset != tc.charset {
			t.Errorf("decodeBody(%q, %q, %q) = %q from %s, want %q from %s", tc.body, tc.ct, tc.kind, got, b.Charset, tc.want, tc.charset)
		}
	}
}
