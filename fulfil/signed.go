package fulfil

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Signer is the Ed25519 private key that signs license_format = "signed"
// keys.
type Signer = ed25519.PrivateKey

// SignedPrefix starts every signed key.
const SignedPrefix = "key/"

// maxSignedKey bounds a signed key's length (the License API reads keys
// from requests).
const maxSignedKey = 2048

// Claims is what a signed key carries: "key/" + base64url(JSON of
// Claims) + "." + base64url(Ed25519 signature of that JSON).
type Claims struct {
	ID          string     `json:"id"` // random: two keys of the same order differ
	Product     string     `json:"product"`
	Order       string     `json:"order"`
	Activations int        `json:"activations"`
	IssuedAt    time.Time  `json:"issued_at"`
	ExpiresAt   *time.Time `json:"expires_at"`
}

// SignKey returns a signed key for license l.
func SignKey(s Signer, l *License, rnd io.Reader) (string, error) {
	id := make([]byte, 12)
	if _, err := io.ReadFull(rnd, id); err != nil {
		return "", fmt.Errorf("license key: %w", err)
	}
	c := Claims{ID: base64.RawURLEncoding.EncodeToString(id), Product: l.Product, Order: l.OrderID,
		Activations: l.Limit, IssuedAt: l.CreatedAt.UTC(), ExpiresAt: l.ExpiresAt}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(s, body)
	return SignedPrefix + base64.RawURLEncoding.EncodeToString(body) + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ErrBadSignedKey: not a signed key, or its signature does not verify.
var ErrBadSignedKey = errors.New("not a valid signed license key")

// VerifyKey checks a signed key against the public key pub and returns
// its claims.
func VerifyKey(pub ed25519.PublicKey, key string) (*Claims, error) {
	if len(key) > maxSignedKey || len(pub) != ed25519.PublicKeySize {
		return nil, ErrBadSignedKey
	}
	rest, ok := strings.CutPrefix(key, SignedPrefix)
	if !ok {
		return nil, ErrBadSignedKey
	}
	b64body, b64sig, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, ErrBadSignedKey
	}
	body, err1 := base64.RawURLEncoding.Strict().DecodeString(b64body)
	sig, err2 := base64.RawURLEncoding.Strict().DecodeString(b64sig)
	if err1 != nil || err2 != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, body, sig) {
		return nil, ErrBadSignedKey
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, ErrBadSignedKey
	}
	return &c, nil
}
