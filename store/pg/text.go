package pg

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// PostgreSQL's text refuses the NUL byte and invalid UTF-8, which
// request-derived strings stored in text columns may hold (a PayPal
// txn_id is whatever the poster sent, a Content-Type parameter any
// byte): written as they are, they would fail the ingest transaction of
// every request grouped with them. toText writes such a string as
// textEscape and its bytes in hex, and fromText reads it back, so that
// the column keeps each string exactly (as bbolt does) and distinct
// strings stay distinct: a valid string starting with textEscape is
// escaped too, so no string is written as another's escape.

// textEscape starts an escaped string: U+FFFF, a noncharacter no text
// of a request is expected to start with.
const textEscape = "\uffff"

// toText is s as a text column holds it.
func toText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) && !strings.HasPrefix(s, textEscape) {
		return s
	}
	return textEscape + hex.EncodeToString([]byte(s))
}

// fromText is the string toText wrote as s (s itself when it is not
// escaped, or no longer decodes).
func fromText(s string) string {
	h, ok := strings.CutPrefix(s, textEscape)
	if !ok {
		return s
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return s
	}
	return string(b)
}

// validText is an error text as a text column takes it: invalid UTF-8
// as U+FFFD, without NUL bytes (what the admin API's JSON would show of
// them anyway). A delivery's error may quote what the other side said.
func validText(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}

// dedupText is the dedup_key column of a notification with dedup key k:
// toText(k), but a key longer than 200 bytes is "sha256:" and its hash
// in hex, as the bbolt store's dedup index has it (store.dedupKey): the
// column's unique index would refuse a long key (a btree entry holds
// at most 2704 bytes), and with it the ingest transaction of every
// request grouped with it. Such a key reads back as its hash (the admin
// API does not show it; a copy to bbolt dedups as bbolt does).
func dedupText(k string) string {
	if len(k) > 200 {
		sum := sha256.Sum256([]byte(k))
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	return toText(k)
}

// textOf scans a text column written with toText into *s.
type textOf struct{ s *string }

func (t textOf) ScanText(v pgtype.Text) error {
	*t.s = ""
	if v.Valid {
		*t.s = fromText(v.String)
	}
	return nil
}

// dsnParseError is why pgx could not parse a DSN, without the DSN: pgx
// quotes it with the password masked only where it can tell the
// password apart ("password = x", spaces around the "=" as libpq
// allows, or an unescaped "@" in a URL's password show it whole or in
// part), and a reason may quote a fragment of it (a password's second
// word where an unquoted space split it): quoted fragments are left out.
func dsnParseError(err error) string {
	msg := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// "cannot parse `DSN, masked`: reason": the reason alone.
		i := strings.LastIndex(msg, "`: ")
		if i < 0 {
			msg = "not a libpq connection string or URL"
		} else {
			msg = msg[i+len("`: "):]
		}
	}
	return "cannot parse the DSN (not shown: it may hold the password): " + quotedFragment.ReplaceAllString(msg, `"…"`)
}

// quotedFragment matches a double-quoted fragment of an error message.
var quotedFragment = regexp.MustCompile(`"[^"]*"`)
