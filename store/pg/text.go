package pg

import (
	"encoding/hex"
	"strings"
	"unicode/utf8"

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

// textOf scans a text column written with toText into *s.
type textOf struct{ s *string }

func (t textOf) ScanText(v pgtype.Text) error {
	*t.s = ""
	if v.Valid {
		*t.s = fromText(v.String)
	}
	return nil
}
