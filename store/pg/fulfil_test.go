package pg

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/fulfil"
	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
	"ipnd/public"
	"ipnd/store"
)

// fulfilStore is a store's fulfilment as the public routes and the admin
// API use it.
type fulfilStore interface {
	public.FulfilStore
	SetCatalog(c *fulfil.Catalog)
	Deliveries(id string) (*fulfil.Record, map[string]*fulfil.License, error)
	Reissue(id string, now time.Time) ([]ipn.Delivered, error)
	PoolRemaining() map[string]int
	SigningKey() (ed25519.PublicKey, error)
}

// testSigner signs the scenario's signed keys (one key for both stores).
var testSigner = ed25519.NewKeyFromSeed([]byte("ipnd-fulfil24-test-signing-seed!"))

// fulfilCatalog: "app" (generated keys, 2 downloads, 3 activations),
// "pool" (3 keys in its pool), "sig" (signed keys, for a subscription).
func fulfilCatalog(t *testing.T, pool ...string) *fulfil.Catalog {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return &fulfil.Catalog{PublicURL: "https://shop.example", Grace: 24 * time.Hour, Signer: testSigner, Products: map[string]*fulfil.Product{
		"app": {ID: "app", Name: "App", File: file("app.zip"), Root: dir, DownloadLimit: 2, LinkTTL: time.Hour,
			License: fulfil.LicenseGenerated, Activations: 3, Format: fulfil.FormatGrouped},
		"pool": {ID: "pool", Name: "Pooled", File: file("pool.zip"), Root: dir, DownloadLimit: 5, LinkTTL: 2 * time.Hour,
			License: fulfil.LicensePool, Activations: 1, Pool: pool},
		"sig": {ID: "sig", Name: "Signed", File: file("sig.zip"), Root: dir, DownloadLimit: 3, LinkTTL: 3 * time.Hour,
			License: fulfil.LicenseGenerated, Activations: 1, Format: fulfil.FormatSigned},
	}}
}

// paypalForm is a PayPal IPN of txn id txn with the fields given.
func paypalForm(txn, fields string) *ipn.Notification {
	n := paypalIPN(txn, "")
	n.DedupKey = "trk-" + txn
	n.Body = []byte("txn_id=" + txn + "&mc_currency=USD&invoice=ORD-P3&receiver_email=shop%40example.com&payer_email=buyer%40example.com&" + fields)
	return n
}

// fulfilScenario runs, on b with its fulfilment fs, payments that issue
// links and keys through the real pipeline (two units of a generated
// key, pool keys until the pool is empty, an unknown product, a full
// refund, a subscription and its renewal with signed keys, a PayPal
// reversal and its cancellation), then downloads (concurrent, to the
// limit), a reissue, concurrent activations of one key past its limit;
// it returns what the store holds after each phase, as text to compare.
func fulfilScenario(t *testing.T, b *backend, fs fulfilStore) string {
	t.Helper()
	fs.SetCatalog(fulfilCatalog(t, "POOL-A", "POOL-B", "POOL-C"))
	verify := verifier(t)
	notes := []*ipn.Notification{
		webhook("f1", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"10.00","currency":"USD","customer_email":"a@example.com",`+
			`"items":[{"product":"app","quantity":2},{"product":"pool","quantity":1}]`),
		webhook("f2", "payment.completed", `"txn_id":"T2","order_id":"O2","amount":"10.00","currency":"USD","customer_email":"b@example.com",`+
			`"items":[{"product":"pool","quantity":2}]`),
		webhook("f3", "payment.completed", `"txn_id":"T3","order_id":"O3","amount":"10.00","currency":"USD","items":[{"product":"pool","quantity":1}]`),
		webhook("f4", "payment.completed", `"txn_id":"T4","order_id":"O4","amount":"10.00","currency":"USD","items":[{"product":"nope","quantity":1}]`),
		webhook("f5", "payment.refunded", `"txn_id":"R2","parent_txn_id":"T2","amount":"10.00","currency":"USD"`),
		webhook("f6", "subscription.started", `"txn_id":"S1P","order_id":"O6","subscription_id":"S1","amount":"5.00","currency":"USD"`),
		webhook("f7", "subscription.payment", `"txn_id":"S1P2","order_id":"O6","subscription_id":"S1","amount":"5.00","currency":"USD",`+
			`"period_end":"2027-02-01T00:00:00Z","items":[{"product":"sig","quantity":1}]`),
		webhook("f8", "subscription.payment", `"txn_id":"S1P3","order_id":"O6","subscription_id":"S1","amount":"5.00","currency":"USD",`+
			`"period_end":"2027-03-01T00:00:00Z"`),
		paypalForm("PP3", "txn_type=web_accept&payment_status=Completed&mc_gross=19.95&item_number=app&quantity=1"),
		paypalForm("PP3R", "payment_status=Reversed&parent_txn_id=PP3&mc_gross=-19.95&reason_code=chargeback"),
		paypalForm("PP3C", "payment_status=Canceled_Reversal&parent_txn_id=PP3&mc_gross=19.95"),
	}
	// One at a time from the PayPal payment on: each PayPal notification
	// is verified by its own postback, and the order they are recorded in
	// would otherwise depend on which postback answers first.
	for i, n := range notes {
		if _, err := b.append(n); err != nil {
			t.Fatal(err)
		}
		if i >= 7 {
			runUntilIdle(t, b, verify, uint64(i+1))
		}
	}
	var out strings.Builder
	for id := uint64(1); id <= uint64(len(notes)); id++ {
		p, err := b.state(id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "notification %d: %s\n", id, p.State)
	}
	orders := []string{"O1", "O2", "O3", "O4", "O6", "ORD-P3"}
	describeFulfil(t, b, fs, &out, orders)

	// The links of O1 and O2, as the payment emails carry them.
	links := map[string][]ipn.Delivered{}
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Effect.Template == ipn.TemplatePaymentReceived && it.Effect.Order != nil && links[it.Effect.OrderID] == nil {
			links[it.Effect.OrderID] = it.Effect.Order.Deliveries
		}
	}
	token := func(d ipn.Delivered) string { return strings.TrimPrefix(d.DownloadURL, "https://shop.example/dl/") }
	if len(links["O1"]) != 3 || len(links["O2"]) != 2 {
		t.Fatalf("%s: the payment emails carry %d and %d links, want 3 and 2", b.name, len(links["O1"]), len(links["O2"]))
	}
	now := time.Now()
	// Two links of O1 downloaded at once, each to its limit: every
	// download counted (they share the order's record).
	var wg sync.WaitGroup
	for _, d := range links["O1"][:2] {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, refusal, err := fs.Download(token(d), now)
				if err != nil || refusal != "" {
					t.Errorf("%s: download: %q %v", b.name, refusal, err)
					return
				}
				if err := fs.CountDownload(g, 100, 100); err != nil {
					t.Errorf("%s: count: %v", b.name, err)
				}
			}()
		}
	}
	wg.Wait()
	if rec, _, err := fs.Deliveries("O1"); err == nil {
		for _, d := range rec.Deliveries {
			fmt.Fprintf(&out, "after the downloads: %s downloads=%d sent=%d\n", d.Product, d.Downloads, d.Sent)
		}
	}
	downloadResult := func(tok string) string {
		g, refusal, err := fs.Download(tok, now)
		switch {
		case err != nil:
			return "error " + strings.TrimPrefix(err.Error(), "postgres unavailable: ")
		case refusal != "":
			return "refused " + refusal
		}
		return fmt.Sprintf("grant %s left=%d downloads=%d sent=%d limit=%d", g.Product.ID, g.Left, g.Downloads, g.Sent, g.Limit)
	}
	fmt.Fprintf(&out, "\nO1 link 0: %s\nO1 link 2: %s\nO2 link 0: %s\nunknown: %s\nexpired: %s\n",
		downloadResult(token(links["O1"][0])), downloadResult(token(links["O1"][2])), downloadResult(token(links["O2"][0])),
		downloadResult("nope"), func() string {
			_, r, err := fs.Download(token(links["O1"][2]), now.Add(3*time.Hour))
			return fmt.Sprintf("%q %v", r, err)
		}())

	// A reissue: new links, the old ones unknown; none for a revoked order.
	shown, err := fs.Reissue("O1", now)
	if err != nil {
		t.Fatalf("%s: reissue: %v", b.name, err)
	}
	fmt.Fprintf(&out, "reissued O1: %d links; old link: %s; new link: %s\n", len(shown), downloadResult(token(links["O1"][0])), downloadResult(token(shown[0])))
	if shown[0].LicenseKey != links["O1"][0].LicenseKey {
		t.Errorf("%s: the reissue's email shows license %q, the payment's %q", b.name, shown[0].LicenseKey, links["O1"][0].LicenseKey)
	}
	_, err = fs.Reissue("O2", now)
	fmt.Fprintf(&out, "reissue O2: revoked=%v\n", errors.Is(err, store.ErrRevoked))
	_, err = fs.Reissue("O9", now)
	fmt.Fprintf(&out, "reissue O9: not found=%v\n", errors.Is(err, store.ErrNotFound))

	// Eight activations of one key at once, 3 allowed: 3 succeed, each
	// kept (no update lost).
	key := links["O1"][0].LicenseKey
	var mu sync.Mutex
	results := map[string]int{}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := fs.UpdateLicense(key, func(l fulfil.License) (fulfil.License, error) {
				next, _, err := fulfil.Activate(l, fmt.Sprintf("host-%d", i), rand.Reader, now)
				return next, err
			})
			mu.Lock()
			defer mu.Unlock()
			var r *fulfil.Refusal
			switch {
			case err == nil:
				results["activated"]++
			case errors.As(err, &r):
				results[r.Message]++
			default:
				results["error "+err.Error()]++
			}
		}()
	}
	wg.Wait()
	l, err := fs.License(key)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&out, "8 concurrent activations: %v; license has %d instances, status %s\n", results, len(l.Instances), l.Status(now))
	_, err = fs.License("NOPE-NOPE")
	fmt.Fprintf(&out, "unknown key: not found=%v\n", errors.Is(err, store.ErrNotFound))
	_, err = fs.UpdateLicense("NOPE-NOPE", func(l fulfil.License) (fulfil.License, error) { return l, nil })
	fmt.Fprintf(&out, "update of an unknown key: not found=%v\n", errors.Is(err, store.ErrNotFound))

	// A key added to the pool file: one left again.
	fs.SetCatalog(fulfilCatalog(t, "POOL-A", "POOL-B", "POOL-C", "POOL-D"))
	fmt.Fprintf(&out, "pool with POOL-D added: %v\n", fs.PoolRemaining())
	pub, err := fs.SigningKey()
	fmt.Fprintf(&out, "signing key recorded: %v %v\n", pub.Equal(testSigner.Public()), err)
	describeFulfil(t, b, fs, &out, orders)
	return out.String()
}

// describeFulfil writes the orders' status and flags, their deliveries
// and licenses (random keys by their form), and the pools' counts.
func describeFulfil(t *testing.T, b *backend, fs fulfilStore, out *strings.Builder, orders []string) {
	t.Helper()
	for _, id := range orders {
		o, err := b.order(id)
		if err != nil {
			t.Fatalf("%s: order %s: %v", b.name, id, err)
		}
		var changes []string
		for _, h := range o.History {
			changes = append(changes, fmt.Sprintf("%s>%s by %d", h.From, h.To, h.Notification))
		}
		fmt.Fprintf(out, "order %s: %s flags=%v items=%v %q\n", id, o.Status, o.Flags, o.Items, changes)
		rec, lic, err := fs.Deliveries(id)
		if errors.Is(err, store.ErrNotFound) {
			fmt.Fprintf(out, "  no deliveries\n")
			continue
		}
		if err != nil {
			t.Fatalf("%s: deliveries of %s: %v", b.name, id, err)
		}
		fmt.Fprintf(out, "  revoked=%v reason=%q reissues=%d test=%v\n", rec.Revoked, rec.Reason, rec.Reissues, rec.Test)
		for _, d := range rec.Deliveries {
			fmt.Fprintf(out, "  %s limit=%d downloads=%d sent=%d ttl=%s", d.Product, d.Limit, d.Downloads, d.Sent, d.ExpiresAt.Sub(rec.IssuedAt).Round(time.Minute))
			if l := lic[d.LicenseHash]; l != nil {
				form := l.Key
				switch {
				case strings.HasPrefix(l.Key, fulfil.SignedPrefix):
					c, err := fulfil.VerifyKey(testSigner.Public().(ed25519.PublicKey), l.Key)
					form = fmt.Sprintf("signed(verified=%v product=%s)", err == nil, c.Product)
				case !strings.HasPrefix(l.Key, "POOL-"):
					form = fmt.Sprintf("grouped(%d)", len(l.Key))
				}
				exp := "never"
				if l.ExpiresAt != nil {
					exp = l.ExpiresAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(out, " license=%s limit=%d instances=%d disabled=%v reason=%q expires=%s sub=%s customer=%s",
					form, l.Limit, len(l.Instances), l.Disabled, l.DisabledReason, exp, l.SubscriptionID, l.CustomerEmail)
			}
			fmt.Fprintln(out)
		}
	}
	fmt.Fprintf(out, "pool remaining: %v\n", fs.PoolRemaining())
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, it := range items {
		kinds = append(kinds, fmt.Sprintf("%s/%s/%s(%d)", it.Effect.OrderID, it.Effect.Kind, it.Effect.Template, len(deliveriesOf(it.Effect))))
	}
	slices.Sort(kinds)
	fmt.Fprintf(out, "outbox: %s\n", strings.Join(kinds, " "))
}

func deliveriesOf(e ipn.Effect) []ipn.Delivered {
	if e.Order == nil {
		return nil
	}
	return e.Order.Deliveries
}

// TestPGFulfilment runs one fulfilment scenario through the real
// pipeline on the bbolt store and on PostgreSQL and compares what each
// holds: the links and keys issued (pool keys in order, until the pool
// is empty: review), the orders sent to review, the refund's revocation,
// a reversal's and its cancellation's, a subscription's license renewed,
// downloads counted (two links of one order downloaded at once), a
// reissue, concurrent activations of one key past its limit (none
// lost), the pools' counts and the signing key recorded.
func TestPGFulfilment(t *testing.T) {
	c := pgtest.Start(t)
	bolt := boltBackend(t)
	want := fulfilScenario(t, bolt, bolt.journal.(*store.DB))
	db := open(t, c.DSN())
	got := fulfilScenario(t, pgBackend(t, db), db.Dashboard())
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	for _, must := range []string{
		"order O1: paid", "license=POOL-A", "order O2: refunded", "license=POOL-B", "license=POOL-C", "disabled=true reason=\"order refunded\"",
		"order O3: review flags=[license_pool_empty]", "order O4: review flags=[unknown_product]",
		"pool remaining: map[pool:0]", "pool with POOL-D added: map[pool:1]",
		"signed(verified=true product=sig)", "expires=2027-03-02T00:00:00Z", `order ORD-P3: paid flags=[] items=[{app 1}] [">paid by 9" "paid>reversed by 10" "reversed>paid by 11"]`,
		"O1 link 0: refused limit", "O1 link 2: grant pool left=5", "O2 link 0: refused revoked", "unknown: error not found",
		"expired: \"expired\"", "reissued O1: 3 links; old link: error not found; new link: grant app left=2",
		"reissue O2: revoked=true", "reissue O9: not found=true",
		"8 concurrent activations: map[This license key has reached the activation limit.:5 activated:3]; license has 3 instances",
		"after the downloads: app downloads=2 sent=200", "signing key recorded: true <nil>", "O1/email_customer/payment_received(3)",
	} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q", must)
		}
	}
	t.Logf("both backends:\n%s", want)
}

// TestPGSharedSigningKey: every ipnd on one database signs with the key
// the database keeps: two processes asking at once for it get one key,
// created once; a key offered later does not replace it. A database
// whose signed keys were issued by the bbolt store it was copied from
// takes only that key.
func TestPGSharedSigningKey(t *testing.T) {
	c := pgtest.Start(t)
	a, b := open(t, c.DSN()).Dashboard(), open(t, c.DSN()).Dashboard()
	keys := make([]ed25519.PrivateKey, 2)
	var wg sync.WaitGroup
	for i, d := range []*Dashboard{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := d.SharedSigningKey(nil)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	if keys[0] == nil || !keys[0].Equal(keys[1]) {
		t.Fatalf("two processes sign with different keys")
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if k, err := b.SharedSigningKey(other); err != nil || !k.Equal(keys[0]) {
		t.Fatalf("an offered key replaced the database's: %v", err)
	}
	if pub, err := a.SigningKey(); pub != nil || err != nil {
		t.Fatalf("no signed key issued, SigningKey = %v %v", pub, err)
	}

	// Copied from a bbolt store that issued signed keys with testSigner.
	c2 := pgtest.Start(t)
	db := open(t, c2.DSN())
	if _, err := db.pool.Exec(context.Background(), `UPDATE license_signing SET pub = $1`, []byte(testSigner.Public().(ed25519.PublicKey))); err != nil {
		t.Fatal(err)
	}
	d := db.Dashboard()
	if _, err := d.SharedSigningKey(nil); !errors.Is(err, ErrSigningKeyMissing) {
		t.Fatalf("no key offered: %v", err)
	}
	if _, err := d.SharedSigningKey(other); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("another key offered: %v", err)
	}
	if k, err := d.SharedSigningKey(testSigner); err != nil || !k.Equal(testSigner) {
		t.Fatalf("the key that signed: %v", err)
	}
	if k, err := d.SharedSigningKey(nil); err != nil || !k.Equal(testSigner) {
		t.Fatalf("once kept: %v", err)
	}
}

// TestPGPoolConcurrentIssue: two transactions issuing from a pool of
// one key at once: one takes it, the other finds the pool empty; the
// key is handed out once.
func TestPGPoolConcurrentIssue(t *testing.T) {
	c := pgtest.Start(t)
	ds := []*Dashboard{open(t, c.DSN()).Dashboard(), open(t, c.DSN()).Dashboard()}
	p := &fulfil.Product{ID: "pool", License: fulfil.LicensePool, Pool: []string{"ONLY-KEY"}}
	got := make([]string, 2)
	errs := make([]error, 2)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = d.fulfilUpdate(func(t *pgTx) error {
				var err error
				got[i], err = pgFulfil{t}.TakePoolKey(p, fmt.Sprintf("O%d", i))
				return err
			})
		}()
	}
	close(start)
	wg.Wait()
	taken, empty := 0, 0
	for i := range 2 {
		switch {
		case errs[i] == nil && got[i] == "ONLY-KEY":
			taken++
		case errors.Is(errs[i], fulfil.ErrPoolEmpty):
			empty++
		default:
			t.Errorf("issuer %d: %q %v", i, got[i], errs[i])
		}
	}
	if taken != 1 || empty != 1 {
		t.Fatalf("taken %d, empty %d: want one each", taken, empty)
	}
	ds[0].SetCatalog(&fulfil.Catalog{Products: map[string]*fulfil.Product{"pool": p}})
	if n := ds[0].PoolRemaining(); n["pool"] != 0 {
		t.Fatalf("PoolRemaining = %v", n)
	}
}

// fulfilDump is everything fs holds of the orders' deliveries and
// licenses, exactly (JSON), the pools' counts and the signing key.
func fulfilDump(t *testing.T, fs fulfilStore, orders []string) string {
	t.Helper()
	var out strings.Builder
	for _, id := range orders {
		rec, lic, err := fs.Deliveries(id)
		if errors.Is(err, store.ErrNotFound) {
			fmt.Fprintf(&out, "%s: none\n", id)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(rec)
		l, _ := json.Marshal(lic)
		fmt.Fprintf(&out, "%s: %s\n  %s\n", id, b, l)
	}
	pub, err := fs.SigningKey()
	fmt.Fprintf(&out, "pools %v signing %x %v\n", fs.PoolRemaining(), pub, err)
	return out.String()
}

// TestPGMigrateFulfilmentRoundTrip: the fulfilment of a bbolt store
// (the scenario of TestPGFulfilment) copied into PostgreSQL and back
// into a new file is the same in all three, field by field; the links
// the last reissue emailed download alike in each, and a pool key is
// not handed out again after the copy.
func TestPGMigrateFulfilmentRoundTrip(t *testing.T) {
	c := pgtest.Start(t)
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fulfilScenario(t, boltOn(db), db)
	items, err := db.ListOutbox("", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var links []ipn.Delivered
	for _, it := range items {
		if strings.HasPrefix(it.Effect.Cause, "O1/deliveries/reissue/") {
			links = it.Effect.Order.Deliveries
		}
	}
	if len(links) != 3 {
		t.Fatalf("the reissue's email carries %d links", len(links))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	pdb := open(t, c.DSN())
	ctx := context.Background()
	if err := store.Export(path, func(s *store.Snapshot) error { _, err := pdb.Import(ctx, s); return err }); err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(t.TempDir(), "back.db")
	if err := store.Import(back, func(w *store.Importer) error { _, err := pdb.Export(ctx, w); return err }); err != nil {
		t.Fatal(err)
	}
	orders := []string{"O1", "O2", "O3", "O4", "O6", "ORD-P3"}
	cat := fulfilCatalog(t, "POOL-A", "POOL-B", "POOL-C", "POOL-D")
	var dumps []string
	for _, p := range []string{path, back} {
		db, err := store.Open(p, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		db.SetCatalog(cat)
		dumps = append(dumps, fulfilDump(t, db, orders))
		for _, d := range links {
			g, refusal, err := db.Download(strings.TrimPrefix(d.DownloadURL, "https://shop.example/dl/"), time.Now())
			if err != nil || refusal != "" {
				t.Errorf("%s: download: %q %v", p, refusal, err)
			} else {
				dumps[len(dumps)-1] += fmt.Sprintf("link %s left %d\n", g.Product.ID, g.Left)
			}
		}
		db.Close()
	}
	d := pdb.Dashboard()
	d.SetCatalog(cat)
	got := fulfilDump(t, d, orders)
	for _, l := range links {
		g, refusal, err := d.Download(strings.TrimPrefix(l.DownloadURL, "https://shop.example/dl/"), time.Now())
		if err != nil || refusal != "" {
			t.Errorf("postgres: download: %q %v", refusal, err)
		} else {
			got += fmt.Sprintf("link %s left %d\n", g.Product.ID, g.Left)
		}
	}
	if dumps[0] != got || dumps[1] != got {
		t.Errorf("the copies differ:\n--- bbolt\n%s--- postgres\n%s--- back\n%s", dumps[0], got, dumps[1])
	}
	if !strings.Contains(got, "pools map[pool:1] signing ") || !strings.Contains(got, "POOL-B") {
		t.Errorf("dump: %s", got)
	}
	// The copy goes on issuing where the store left off: POOL-D, then empty.
	err = d.fulfilUpdate(func(t *pgTx) error {
		p := cat.Products["pool"]
		k, err := pgFulfil{t}.TakePoolKey(p, "O7")
		if err == nil && k != "POOL-D" {
			err = fmt.Errorf("took %q", k)
		}
		if err == nil {
			_, err = pgFulfil{t}.TakePoolKey(p, "O8")
		}
		return err
	})
	if !errors.Is(err, fulfil.ErrPoolEmpty) {
		t.Errorf("issuing from the copied pool: %v, want POOL-D then empty", err)
	}
}

// TestPGDeleteOrderDeliveries: deleting a test order removes what it was
// delivered (its link answers not found, its license is unknown, its
// record is gone) but its pool key stays handed out; the same payment
// sent again makes a new order that gets new deliveries and the next
// pool key. On both stores alike.
func TestPGDeleteOrderDeliveries(t *testing.T) {
	c := pgtest.Start(t)
	type deleter interface{ DeleteOrder(id string) error }
	run := func(b *backend, fs fulfilStore, del deleter) string {
		fs.SetCatalog(fulfilCatalog(t, "POOL-A", "POOL-B", "POOL-C"))
		pay := func(key string) {
			if _, err := b.append(webhook(key, "payment.completed", `"txn_id":"T1","order_id":"OT","amount":"10.00","currency":"USD","test":true,`+
				`"customer_email":"a@example.com","items":[{"product":"pool","quantity":1}]`)); err != nil {
				t.Fatal(err)
			}
		}
		pay("d1")
		runSandbox(t, b, 1)
		var out strings.Builder
		rec, lic, err := fs.Deliveries("OT")
		if err != nil {
			p, _ := b.state(1)
			o, oerr := b.order("OT")
			t.Fatalf("%s: %v; notification 1: %+v %+v; order %+v %v", b.name, err, p, p.Event, o, oerr)
		}
		key := lic[rec.Deliveries[0].LicenseHash].Key
		fmt.Fprintf(&out, "issued %s, pool %v\n", key, fs.PoolRemaining())
		if err := del.DeleteOrder("OT"); err != nil {
			t.Fatalf("%s: delete: %v", b.name, err)
		}
		_, _, err = fs.Deliveries("OT")
		_, lerr := fs.License(key)
		fmt.Fprintf(&out, "deleted: deliveries not found=%v, license not found=%v, pool %v\n",
			errors.Is(err, store.ErrNotFound), errors.Is(lerr, store.ErrNotFound), fs.PoolRemaining())
		pay("d2")
		runSandbox(t, b, 2)
		rec, lic, err = fs.Deliveries("OT")
		if err != nil {
			p, _ := b.state(2)
			o, oerr := b.order("OT")
			t.Fatalf("%s: %v; notification 2: %+v; order %+v %v", b.name, err, p, o, oerr)
		}
		fmt.Fprintf(&out, "paid again: %s, pool %v\n", lic[rec.Deliveries[0].LicenseHash].Key, fs.PoolRemaining())
		return out.String()
	}
	bolt := boltBackend(t)
	bdb := bolt.journal.(*store.DB)
	want := run(bolt, bdb, bdb)
	db := open(t, c.DSN())
	got := run(pgBackend(t, db), db.Dashboard(), db.Dashboard())
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	if !strings.Contains(want, "deleted: deliveries not found=true, license not found=true, pool map[pool:2]") ||
		!strings.Contains(want, "paid again: POOL-B, pool map[pool:1]") {
		t.Errorf("the scenario:\n%s", want)
	}
	t.Logf("both backends:\n%s", want)
}

// runSandbox runs a pipeline over b's journal whose gateway "test" is a
// sandbox (its test payments are applied, to test orders) until every
// notification up to last is settled, and stops it.
func runSandbox(t *testing.T, b *backend, last uint64) {
	t.Helper()
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Sandbox: true, Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := pipeline.New(pipeline.Options{Journal: b.journal, Gateways: []gateway.Gateway{g}, BatchDelay: time.Millisecond,
		Sandbox: map[string]bool{"test": true}, Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("%s: Run = %v", b.name, err)
		}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st, err := b.state(last); err == nil && st != nil && st.State != ipn.StateReceived && b.cursor() >= last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: notification %d not processed in 30 s", b.name, last)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// TestPGDisputeDecisionDeliveries: a dispute revokes an order's links
// and disables its license; the merchant's decision that it was won
// (DecideOrder, from the admin API) restores them, one lost leaves them
// revoked. On both stores alike.
func TestPGDisputeDecisionDeliveries(t *testing.T) {
	c := pgtest.Start(t)
	type decider interface {
		DecideOrder(id string, d store.Decision, now time.Time) (store.DecisionResult, error)
	}
	run := func(b *backend, fs fulfilStore, dec decider) string {
		fs.SetCatalog(fulfilCatalog(t, "POOL-A"))
		verify := verifier(t)
		var notes []*ipn.Notification
		for _, o := range []string{"W", "L"} {
			pay := paypalForm("PP"+o, "txn_type=web_accept&payment_status=Completed&mc_gross=19.95&item_number=app&quantity=1")
			pay.Body = []byte(strings.Replace(string(pay.Body), "invoice=ORD-P3", "invoice="+o, 1))
			dispute := paypalForm("CASE"+o, "txn_type=new_case&case_type=chargeback&case_id=CASE"+o+"&mc_gross=19.95")
			dispute.Body = []byte(strings.Replace(strings.Replace(string(dispute.Body), "txn_id=CASE"+o, "txn_id=PP"+o, 1), "invoice=ORD-P3", "invoice="+o, 1))
			notes = append(notes, pay, dispute)
		}
		for i, n := range notes { // one at a time: see fulfilScenario
			if _, err := b.append(n); err != nil {
				t.Fatal(err)
			}
			runUntilIdle(t, b, verify, uint64(i+1))
		}
		var out strings.Builder
		show := func(when string) {
			for _, o := range []string{"W", "L"} {
				ord, err := b.order(o)
				if err != nil {
					t.Fatalf("%s: order %s: %v", b.name, o, err)
				}
				rec, lic, err := fs.Deliveries(o)
				if err != nil {
					fmt.Fprintf(&out, "%s: %s %s: %v\n", when, o, ord.Status, err)
					continue
				}
				l := lic[rec.Deliveries[0].LicenseHash]
				fmt.Fprintf(&out, "%s: %s %s revoked=%v reason=%q license disabled=%v\n", when, o, ord.Status, rec.Revoked, rec.Reason, l.Disabled)
			}
		}
		show("disputed")
		for _, o := range []string{"W", "L"} {
			d := store.Decision{OrderDecision: ipn.OrderDecision{By: "ann", Why: "case closed"}, Dispute: &ipn.DisputeDecision{Won: o == "W"}}
			if _, err := dec.DecideOrder(o, d, time.Now()); err != nil {
				t.Fatalf("%s: decide %s: %v", b.name, o, err)
			}
		}
		show("decided")
		return out.String()
	}
	bolt := boltBackend(t)
	bdb := bolt.journal.(*store.DB)
	want := run(bolt, bdb, bdb)
	db := open(t, c.DSN())
	got := run(pgBackend(t, db), db.Dashboard(), db.Dashboard())
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	for _, must := range []string{`disputed: W disputed revoked=true reason="order disputed" license disabled=true`,
		`decided: W paid revoked=false reason="" license disabled=false`, `decided: L reversed revoked=true`} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q", must)
		}
	}
	t.Logf("both backends:\n%s", want)
}
