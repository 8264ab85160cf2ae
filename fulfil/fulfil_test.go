package fulfil

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

func catalog() *Catalog {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &Catalog{PublicURL: "https://shop.example.com", Grace: 72 * time.Hour, Signer: priv, Products: map[string]*Product{
		"book": {ID: "book", Name: "Book", DownloadLimit: 5, LinkTTL: 168 * time.Hour, License: LicenseNone},
		"app":  {ID: "app", Name: "App", DownloadLimit: 3, LinkTTL: time.Hour, License: LicenseGenerated, Activations: 2, Format: FormatGrouped},
		"font": {ID: "font", Name: "Font", DownloadLimit: 5, LinkTTL: time.Hour, License: LicensePool, Activations: 1, Pool: []string{"P1", "P2"}},
		"sig":  {ID: "sig", Name: "Signed", DownloadLimit: 5, LinkTTL: time.Hour, License: LicenseGenerated, Activations: 1, Format: FormatSigned},
	}}
}

func TestDecide(t *testing.T) {
	issued := &Record{}
	revoked := &Record{Revoked: true}
	for _, tc := range []struct {
		from, to ipn.OrderStatus
		rec      *Record
		want     Action
	}{
		{ipn.OrderAwaitingPayment, ipn.OrderPaid, nil, Issue},
		{"", ipn.OrderPaid, nil, Issue},
		{ipn.OrderPending, ipn.OrderPartiallyRefunded, nil, Issue},
		{ipn.OrderPaid, ipn.OrderPaid, issued, None},
		{ipn.OrderPaid, ipn.OrderPartiallyRefunded, issued, None},
		{ipn.OrderPaid, ipn.OrderRefunded, issued, Revoke},
		{ipn.OrderPartiallyRefunded, ipn.OrderRefunded, issued, Revoke},
		{ipn.OrderPaid, ipn.OrderReversed, issued, Revoke},
		{ipn.OrderPaid, ipn.OrderDisputed, issued, Revoke},
		{ipn.OrderDisputed, ipn.OrderReversed, revoked, None},
		{ipn.OrderDisputed, ipn.OrderPaid, revoked, Restore},
		{ipn.OrderReversed, ipn.OrderPaid, revoked, Restore},
		{ipn.OrderPaid, ipn.OrderReview, issued, None},
		{ipn.OrderPaid, ipn.OrderRefunded, nil, None},
		{ipn.OrderAwaitingPayment, ipn.OrderPending, nil, None},
		{ipn.OrderPaid, ipn.OrderPartiallyRefunded, nil, None},
		{ipn.OrderDisputed, ipn.OrderPaid, nil, None},
		{ipn.OrderFailed, ipn.OrderPaid, nil, Issue},
	} {
		if got := Decide(tc.from, tc.to, tc.rec); got != tc.want {
			t.Errorf("Decide(%s -> %s, %v) = %v, want %v", tc.from, tc.to, tc.rec, got, tc.want)
		}
	}
}

func TestIssue(t *testing.T) {
	c := catalog()
	o := &ipn.Order{ID: "O-1", CustomerEmail: "a@example.com", CustomerName: "Ann"}
	items := []ipn.Item{{Product: "book", Quantity: 2}, {Product: "app", Quantity: 1}, {Product: "font", Quantity: 1}, {Product: "sig", Quantity: 1}}
	next := 0
	pool := func(p *Product) (string, error) {
		if next >= len(p.Pool) {
			return "", ErrPoolEmpty
		}
		next++
		return p.Pool[next-1], nil
	}
	is, err := c.Issue(o, items, rand.Reader, t0, pool, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(is.Record.Deliveries) != 5 || len(is.Delivered) != 5 || len(is.Licenses) != 3 {
		t.Fatalf("issued %d deliveries, %d shown, %d licenses", len(is.Record.Deliveries), len(is.Delivered), len(is.Licenses))
	}
	tokens := map[string]bool{}
	for i, d := range is.Record.Deliveries {
		tok := strings.TrimPrefix(is.Delivered[i].DownloadURL, "https://shop.example.com/dl/")
		if len(tok) < 32 || Hash(tok) != d.TokenHash || tokens[tok] {
			t.Errorf("delivery %d: token %q, hash %s", i, tok, d.TokenHash)
		}
		tokens[tok] = true
		if strings.Contains(d.TokenHash, tok) {
			t.Error("the token is stored in clear")
		}
		if want := t0.Add(c.Products[d.Product].LinkTTL); !d.ExpiresAt.Equal(want) || d.Limit != c.Products[d.Product].DownloadLimit {
			t.Errorf("delivery %d: %+v", i, d)
		}
	}
	if !regexp.MustCompile(`^[A-HJKMNP-Z2-9]{5}(-[A-HJKMNP-Z2-9]{5}){3}$`).MatchString(is.Licenses[0].Key) {
		t.Errorf("grouped key %q", is.Licenses[0].Key)
	}
	if is.Licenses[1].Key != "P1" || is.Licenses[0].Limit != 2 || is.Licenses[0].CustomerEmail != "a@example.com" || is.Licenses[0].ExpiresAt != nil {
		t.Errorf("licenses = %+v", is.Licenses)
	}
	claims, err := VerifyKey(c.Signer.Public().(ed25519.PublicKey), is.Licenses[2].Key)
	if err != nil || claims.Order != "O-1" || claims.Product != "sig" || claims.Activations != 1 {
		t.Errorf("signed key: %v %+v", err, claims)
	}
	if _, err := c.Issue(o, []ipn.Item{{Product: "font", Quantity: 2}}, rand.Reader, t0, pool, "", time.Time{}); !errors.Is(err, ErrPoolEmpty) {
		t.Errorf("an empty pool: %v", err)
	}
	if u := c.Unknown([]ipn.Item{{Product: "book"}, {Product: "nope"}}); len(u) != 1 || u[0] != "nope" {
		t.Errorf("Unknown = %v", u)
	}
	// A subscription's license runs to the period's end plus the grace.
	end := t0.Add(30 * 24 * time.Hour)
	is, _ = c.Issue(o, []ipn.Item{{Product: "app", Quantity: 1}}, rand.Reader, t0, pool, "sub-1", end)
	if l := is.Licenses[0]; l.ExpiresAt == nil || !l.ExpiresAt.Equal(end.Add(72*time.Hour)) || l.SubscriptionID != "sub-1" {
		t.Errorf("subscription license = %+v", l)
	}
	// Randomness that fails is an error, not a weak key.
	if _, err := c.Issue(o, items, bytes.NewReader(nil), t0, pool, "", time.Time{}); err == nil {
		t.Error("Issue with no randomness succeeded")
	}
}

func TestRefusal(t *testing.T) {
	rec := &Record{Deliveries: []Delivery{{Limit: 2, ExpiresAt: t0.Add(time.Hour)}}}
	if r := rec.Refusal(0, t0); r != "" {
		t.Errorf("fresh link refused: %s", r)
	}
	rec.Deliveries[0].Downloads = 2
	if r := rec.Refusal(0, t0); r != RefusedLimit {
		t.Errorf("at the limit: %q", r)
	}
	rec.Deliveries[0].Downloads = 0
	if r := rec.Refusal(0, t0.Add(time.Hour)); r != RefusedExpired {
		t.Errorf("at the ttl: %q", r)
	}
	rec.Revoked = true
	if r := rec.Refusal(0, t0); r != RefusedRevoked {
		t.Errorf("revoked: %q", r)
	}
}

func TestLicenseLifecycle(t *testing.T) {
	exp := t0.Add(time.Hour)
	l := License{Limit: 2, ExpiresAt: &exp}
	if l.Status(t0) != StatusInactive {
		t.Errorf("status = %s", l.Status(t0))
	}
	l, a, err := Activate(l, "one", rand.Reader, t0)
	if err != nil || a.Name != "one" || len(a.ID) != 36 || l.Status(t0) != StatusActive {
		t.Fatalf("activate: %v %+v", err, a)
	}
	l, b, _ := Activate(l, "two", rand.Reader, t0)
	if _, _, err := Activate(l, "three", rand.Reader, t0); err != ErrLimit {
		t.Errorf("third activation: %v", err)
	}
	if ok, in, r := Validate(&l, b.ID, t0); !ok || in == nil || in.Name != "two" || r != nil {
		t.Errorf("validate: %v %v %v", ok, in, r)
	}
	if ok, _, r := Validate(&l, "nope", t0); ok || r != ErrUnknownInstance {
		t.Errorf("validate an unknown instance: %v %v", ok, r)
	}
	if ok, _, r := Validate(&l, "", exp); ok || r != ErrExpired || l.Status(exp) != StatusExpired {
		t.Errorf("validate expired: %v %v", ok, r)
	}
	if _, _, err := Activate(l, "late", rand.Reader, exp); err != ErrExpired {
		t.Errorf("activate expired: %v", err)
	}
	l, _, err = Deactivate(l, a.ID)
	if err != nil || len(l.Instances) != 1 {
		t.Errorf("deactivate: %v %+v", err, l.Instances)
	}
	if _, _, err := Deactivate(l, a.ID); err != ErrUnknownInstance {
		t.Errorf("deactivate twice: %v", err)
	}
	l.Disabled = true
	if _, _, err := Activate(l, "x", rand.Reader, t0); err != ErrDisabled {
		t.Errorf("activate disabled: %v", err)
	}
	if ok, _, r := Validate(&l, "", t0); ok || r != ErrDisabled || l.Status(t0) != StatusDisabled {
		t.Errorf("validate disabled: %v %v", ok, r)
	}
}

func TestToReview(t *testing.T) {
	o := ipn.Order{ID: "O", Status: ipn.OrderPaid, CustomerEmail: "c@example.com",
		History: []ipn.OrderChange{{From: ipn.OrderAwaitingPayment, To: ipn.OrderPaid, Reason: "payment T completed"}}}
	snap := o.Snapshot(ipn.OrderAwaitingPayment, "payment T completed")
	ev := &ipn.Event{TxnID: "T"}
	effects := []ipn.Effect{
		{Kind: ipn.EffectEmailCustomer, Template: ipn.TemplatePaymentReceived, Cause: "O/paid/payment_received", Order: snap, Event: ev},
		{Kind: ipn.EffectShopCallback, Cause: "event/x", Order: snap, Event: ev},
	}
	out := ToReview(&o, &o.History[0], effects, ipn.FlagUnknownProduct, `unknown product "x"`, t0)
	if o.Status != ipn.OrderReview || len(o.Flags) != 1 || o.History[0].To != ipn.OrderReview {
		t.Errorf("order = %+v", o)
	}
	if snap.Status != ipn.OrderPaid {
		t.Error("ToReview changed the snapshot it was given")
	}
	if len(out) != 2 || out[0].Kind != ipn.EffectShopCallback || out[0].Order.Status != ipn.OrderReview ||
		out[1].Kind != ipn.EffectEmailMerchant || out[1].Template != ipn.TemplateOrderReview || !strings.Contains(out[1].Reason, "unknown_product") {
		t.Errorf("effects = %+v", out)
	}
}

func TestReissue(t *testing.T) {
	c := catalog()
	rec := Record{OrderID: "O", IssuedAt: t0, Deliveries: []Delivery{{Product: "app", TokenHash: "old", Downloads: 3, Limit: 3, ExpiresAt: t0, LicenseHash: "h"}}}
	next, old, shown, err := c.Reissue(rec, map[string]*License{"h": {Key: "K"}}, rand.Reader, t0.Add(time.Hour))
	if err != nil || len(old) != 1 || old[0] != "old" || next.Deliveries[0].Downloads != 0 || next.Deliveries[0].TokenHash == "old" ||
		shown[0].LicenseKey != "K" || shown[0].DownloadsLeft != 3 || !shown[0].ExpiresAt.Equal(t0.Add(2*time.Hour)) || rec.Deliveries[0].TokenHash != "old" {
		t.Errorf("reissue: %v %+v %+v", err, next, shown)
	}
}

func TestRenew(t *testing.T) {
	c := &Catalog{Grace: time.Hour}
	exp := t0.Add(30 * 24 * time.Hour)
	l := License{SubscriptionID: "s", ExpiresAt: &exp}
	pay := func(end time.Time) *ipn.Event {
		return &ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusCompleted, SubscriptionID: "s", PeriodEnd: end.Format(time.RFC3339)}
	}
	n, ok := c.Renew(l, pay(t0.Add(60*24*time.Hour)), t0)
	if !ok || !n.ExpiresAt.Equal(t0.Add(60*24*time.Hour+time.Hour)) || !l.ExpiresAt.Equal(exp) {
		t.Errorf("renewal: %v %v", ok, n.ExpiresAt)
	}
	if _, ok := c.Renew(n, pay(t0.Add(40*24*time.Hour)), t0); ok {
		t.Error("an older period shortened the license")
	}
	if _, ok := c.Renew(n, &ipn.Event{Type: ipn.TypeSubscriptionCanceled, SubscriptionID: "s"}, t0); ok {
		t.Error("a cancellation changed the license")
	}
	if _, ok := c.Renew(n, &ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusFailed, PeriodEnd: t0.Add(90 * 24 * time.Hour).Format(time.RFC3339)}, t0); ok {
		t.Error("a failed payment extended the license")
	}
	e, ok := c.Renew(License{}, &ipn.Event{Type: ipn.TypeSubscriptionExpired}, t0)
	if !ok || !e.ExpiresAt.Equal(t0.Add(time.Hour)) || e.Status(t0) != StatusInactive || e.Status(t0.Add(time.Hour)) != StatusExpired {
		t.Errorf("subscription end: %v %v", ok, e.ExpiresAt)
	}
}
