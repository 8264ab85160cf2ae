package fulfil

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"
)

// FuzzVerifyKey: the signed-key parser never panics, and accepts only
// the key that was signed (any change, whatever it is, is refused).
func FuzzVerifyKey(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	good, err := SignKey(priv, &License{OrderID: "O-1", Product: "app", Limit: 3, CreatedAt: time.Unix(0, 0), ExpiresAt: &exp}, rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("key/")
	f.Add("key/.")
	f.Add("key/e30.AAAA")
	f.Add(good[:len(good)-1])
	f.Add(good + "=")
	f.Add("ABCDE-FGHJK-MNPQR-STUVW")
	f.Fuzz(func(t *testing.T, key string) {
		c, err := VerifyKey(pub, key)
		if key == good {
			if err != nil || c.Order != "O-1" {
				t.Fatalf("the signed key does not verify: %v", err)
			}
			return
		}
		if err == nil {
			t.Fatalf("a key other than the one signed verifies: %q", key)
		}
	})
}
