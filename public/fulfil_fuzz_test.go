package public

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzParseLicenseRequest: the License API's input parsing never panics,
// and what it accepts is bounded and trimmed.
func FuzzParseLicenseRequest(f *testing.F) {
	f.Add("application/json", []byte(`{"license_key":"ABCDE-FGHJK","instance_name":"laptop"}`))
	f.Add("application/json; charset=utf-8", []byte(`{"license_key":12,"instance_id":null}`))
	f.Add("application/json", []byte(`{"license_key":["x"]}`))
	f.Add("application/json", []byte(`[1,2]`))
	f.Add("application/x-www-form-urlencoded", []byte("license_key=K&instance_name=a+b&instance_id=%zz"))
	f.Add("", []byte("license_key=K&license_key=L"))
	f.Add("text/plain", []byte(strings.Repeat("a", 5000)))
	f.Add("application/json", []byte(`{"license_key":"K","instance_name":"a\u001b[2Jb\u0085"}`))
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		lr, err := ParseLicenseRequest(ctype, body)
		if err != nil {
			return
		}
		if len(lr.Key) > maxKeyLen || len(lr.InstanceName) > maxNameLen || len(lr.InstanceID) > maxInstanceLen {
			t.Fatalf("accepted oversized fields: %d %d %d", len(lr.Key), len(lr.InstanceName), len(lr.InstanceID))
		}
		for _, s := range []string{lr.Key, lr.InstanceName, lr.InstanceID} {
			if s != strings.TrimSpace(s) {
				t.Fatalf("field %q not trimmed", s)
			}
			if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
				t.Fatalf("field %q has control characters or is not UTF-8", s)
			}
		}
	})
}
