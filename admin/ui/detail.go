package ui

import (
	"maps"
	"mime"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/unicode"

	"ipnd/ipn"
	"ipnd/store"
)

// The notification page's raw body in its charset, and what decided the
// notification. Decoding is for display only: the stored bytes are
// never changed (they are what a PayPal postback sends back).

// bodyText is a raw body decoded for the page.
type bodyText struct {
	Form    [][2]string // the fields of a form, decoded
	Text    string      // the text of any other body, decoded
	Charset string      // the charset it was decoded from ("utf-8" when it was UTF-8)
	Note    string      // how the charset was chosen, when not named by the message
}

// decodeBody decodes body (of a message of gateway kind kind, sent as
// contentType) for display. A form's charset is its "charset" field
// (PayPal's), else the Content-Type's charset parameter, else
// windows-1252 for PayPal (as the gateway decodes it), else UTF-8 when
// its values are valid UTF-8, else windows-1252. Any other body's is
// the Content-Type's charset parameter, else UTF-8 when valid, else
// windows-1252. An unknown charset name falls back the same way.
func decodeBody(body []byte, contentType, kind string) bodyText {
	var out bodyText
	named := ""
	if _, params, err := mime.ParseMediaType(contentType); err == nil {
		named = strings.TrimSpace(params["charset"])
	}
	if strings.Contains(strings.ToLower(contentType), "x-www-form-urlencoded") {
		q, err := url.ParseQuery(string(body))
		if err != nil && len(q) == 0 {
			// Not a form after all: shown as text below.
		} else {
			if f := strings.TrimSpace(q.Get("charset")); f != "" {
				named = f
			}
			valid := true // every field's name and values valid UTF-8
			for k, vs := range q {
				valid = valid && utf8.ValidString(k)
				for _, v := range vs {
					valid = valid && utf8.ValidString(v)
				}
			}
			enc, name, note := chooseCharset(named, valid, kind == "paypal")
			out.Charset, out.Note = name, note
			for _, k := range slices.Sorted(maps.Keys(q)) {
				for _, v := range q[k] {
					out.Form = append(out.Form, [2]string{decodeString(k, enc), decodeString(v, enc)})
				}
			}
			return out
		}
	}
	enc, name, note := chooseCharset(named, utf8.Valid(body), false)
	out.Charset, out.Note, out.Text = name, note, decodeString(string(body), enc)
	return out
}

// chooseCharset returns the encoding to decode with (nil: UTF-8), its
// name and, when the message did not name it (or named an unknown
// one), how it was chosen.
func chooseCharset(named string, validUTF8, paypal bool) (encoding.Encoding, string, string) {
	note := ""
	if named != "" {
		if e, err := htmlindex.Get(named); err == nil {
			name, _ := htmlindex.Name(e)
			if e == unicode.UTF8 || e == encoding.Nop {
				return nil, "utf-8", ""
			}
			return e, name, ""
		}
		note = "unknown charset " + strings.ToValidUTF8(named, "?") + "; "
	}
	switch {
	case paypal:
		return charmap.Windows1252, "windows-1252", note + "none named: PayPal's default, as the gateway decodes it"
	case validUTF8:
		if note == "" {
			return nil, "utf-8", ""
		}
		return nil, "utf-8", note + "shown as UTF-8"
	default:
		return charmap.Windows1252, "windows-1252", note + "not valid UTF-8: shown as windows-1252"
	}
}

// decodeString decodes s from enc (nil: UTF-8) into valid UTF-8.
func decodeString(s string, enc encoding.Encoding) string {
	if enc != nil {
		if d, err := enc.NewDecoder().String(s); err == nil {
			return d
		}
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// decided is "what decided it" on the notification page: the
// verification's outcome (the history entry that settled it) and what
// its event did to its order (the facts it brought and the transitions
// it caused), each linked.
type decided struct {
	Outcome     *ipn.HistoryEntry
	Verified    bool
	OrderID     string
	OrderFound  bool
	Facts       []ipn.OrderFact
	Transitions []ipn.OrderChange
	Truncated   bool // the order's records were read only in part
}

// decidedScan bounds how many of an order's history entries and facts
// are read to find a notification's.
const decidedScan = 5000

// decideView finds what decided notification id (processing p, event
// ev, the outbox items it caused).
func (u *ui) decideView(id uint64, p *ipn.Processing, ev *ipn.Event, out []store.OutboxItem) decided {
	var d decided
	d.Verified = p.WasVerified()
	for i := len(p.History) - 1; i >= 0; i-- {
		if p.History[i].State != ipn.StateReceived {
			h := p.History[i]
			d.Outcome = &h
			break
		}
	}
	var candidates []string
	if ev != nil && ev.OrderID != "" {
		candidates = append(candidates, ev.OrderID)
	}
	for _, it := range out {
		if it.Effect.OrderID != "" && !slices.Contains(candidates, it.Effect.OrderID) {
			candidates = append(candidates, it.Effect.OrderID)
		}
	}
	for _, oid := range candidates {
		o, err := u.o.Store.GetOrder(oid)
		if err != nil {
			continue
		}
		d.OrderID, d.OrderFound = o.ID, true
		var cut bool
		d.Transitions, cut = scanPages(func(from, n int) ([]ipn.OrderChange, error) { return u.o.Store.OrderHistory(o.ID, from, n) },
			func(h ipn.OrderChange) bool { return h.Notification == id })
		d.Truncated = d.Truncated || cut
		d.Facts, cut = scanPages(func(from, n int) ([]ipn.OrderFact, error) { return u.o.Store.OrderFacts(o.ID, from, n) },
			func(f ipn.OrderFact) bool { return f.Notification == id })
		d.Truncated = d.Truncated || cut
		if len(d.Facts) > 0 || len(d.Transitions) > 0 {
			break
		}
	}
	if d.OrderID == "" && ev != nil {
		d.OrderID = ev.OrderID
	}
	return d
}

// scanPages reads up to decidedScan entries of an order's list, 500 at a
// time, and keeps those keep accepts; truncated: the list went on.
func scanPages[T any](read func(from, n int) ([]T, error), keep func(T) bool) (out []T, truncated bool) {
	for from := 0; from < decidedScan; from += 500 {
		page, err := read(from, 500)
		if err != nil {
			break
		}
		for _, x := range page {
			if keep(x) {
				out = append(out, x)
			}
		}
		if len(page) < 500 {
			break
		}
		if from+500 >= decidedScan {
			truncated = true
		}
	}
	return out, truncated
}
