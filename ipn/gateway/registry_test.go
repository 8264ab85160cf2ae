package gateway_test

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// registryConfigs is a working [[gateway]] table for each kind (secrets
// aside): the registry test builds every kind from it.
var registryConfigs = map[string]gateway.Config{
	"btcpay":            {},
	"coinbase-commerce": {},
	"coinpayments":      {MerchantID: "M1"},
	"hmac":              {HMAC: gateway.HMACOptions{Header: "X-Sig"}},
	"nowpayments":       {},
	"paypal":            {Receivers: []string{"merchant@example.com"}},
	"standard-webhooks": {},
	"stripe":            {},
}

func registryConfig(t *testing.T, kind string) gateway.Config {
	t.Helper()
	cfg, ok := registryConfigs[kind]
	if !ok {
		t.Fatalf("kind %s has no entry in registryConfigs", kind)
	}
	cfg.Name, cfg.Kind = "g", kind
	if gateway.NeedsSecret(kind) {
		cfg.Secrets = []string{swSecret} // whsec_ and base64: every kind takes it
	}
	return cfg
}

// TestRegistry: Kinds is sorted and unique; each kind builds an adapter
// of that kind that accepts exactly its ContentTypes, refuses to be built
// without a secret exactly when it needs one, and applies its default
// tolerance.
func TestRegistry(t *testing.T) {
	names := gateway.Kinds()
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Fatalf("Kinds() = %v, want sorted and unique", names)
	}
	for _, name := range names {
		k, ok := gateway.Lookup(name)
		if !ok || k.Name != name {
			t.Fatalf("Lookup(%q) = %q, %v", name, k.Name, ok)
		}
		cfg := registryConfig(t, name)
		g, err := gateway.New(cfg)
		if err != nil {
			t.Fatalf("New(%s): %v", name, err)
		}
		if g.Kind() != name {
			t.Errorf("New(%s).Kind() = %q", name, g.Kind())
		}
		accepts := func(mt string) bool {
			if name == "hmac" { // body json or form
				form := cfg
				form.HMAC.Body = "form"
				return g.Accepts(mt) || mustGateway(t, form).Accepts(mt)
			}
			return g.Accepts(mt)
		}
		for _, ct := range k.ContentTypes {
			if mt := strings.Replace(ct, "*", "vnd.example", 1); !accepts(mt) {
				t.Errorf("%s lists %s but does not accept %s", name, ct, mt)
			}
		}
		for _, mt := range []string{"application/json", "application/vnd.example+json", "application/x-www-form-urlencoded", "text/plain"} {
			listed := slices.Contains(k.ContentTypes, mt) || (strings.HasSuffix(mt, "+json") && slices.Contains(k.ContentTypes, "application/*+json"))
			if accepts(mt) != listed {
				t.Errorf("%s accepts %s: %v, but its ContentTypes %v say %v", name, mt, accepts(mt), k.ContentTypes, listed)
			}
		}
		bare := cfg
		bare.Secrets = nil
		if _, err := gateway.New(bare); (err != nil) != k.NeedsSecret || (err != nil && !errors.Is(err, ipn.ErrConfig)) {
			t.Errorf("New(%s) without a secret: %v, NeedsSecret %v", name, err, k.NeedsSecret)
		}
		if k.NewSecret != nil {
			gen := cfg
			gen.Secrets = []string{k.NewSecret()}
			if _, err := gateway.New(gen); err != nil {
				t.Errorf("New(%s) with a secret of NewSecret: %v", name, err)
			}
		}
	}
	if _, err := gateway.New(gateway.Config{Name: "g", Kind: "nope"}); !errors.Is(err, ipn.ErrConfig) || !strings.Contains(err.Error(), strings.Join(names, ", ")) {
		t.Errorf("New(unknown kind) = %v, want ErrConfig listing %v", err, names)
	}
	if !gateway.NeedsSecret("nope") {
		t.Error("NeedsSecret(unknown kind) = false: only a kind known to verify by postback goes without")
	}
	paypal, _ := gateway.Lookup("paypal")
	if p := paypal.Check(gateway.Config{Name: "g", Kind: "paypal"}); p == nil || p.Key != "receivers" {
		t.Errorf("paypal Check without receivers = %+v, want a problem with receivers", p)
	}
}

// TestSamplesPassTheirGateway: the notification `ipnd simulate` sends
// for a kind passes that kind's Check and normalizes to the sampled
// payment.
func TestSamplesPassTheirGateway(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	simulated := 0
	for _, name := range gateway.Kinds() {
		k, _ := gateway.Lookup(name)
		if k.Sample == nil {
			continue
		}
		simulated++
		cfg := registryConfig(t, name)
		g := mustGateway(t, cfg)
		s, err := k.Sample(gateway.Sample{Order: "ORDER-1", Amount: "19.99", Currency: "USD", Email: "a@b.c", Status: "completed", Now: now}, cfg.Secrets)
		if err != nil {
			t.Fatalf("%s Sample: %v", name, err)
		}
		if !strings.Contains(string(s.Body), s.Marker) || s.What == "" {
			t.Errorf("%s sample: marker %q, what %q, body %s", name, s.Marker, s.What, s.Body)
		}
		mt := gateway.MediaType(s.Header.Get("Content-Type"))
		if _, err := g.Check(&gateway.Inbound{Header: s.Header, Body: s.Body, MediaType: mt, Now: now}); err != nil {
			t.Fatalf("%s: its own sample fails Check: %v", name, err)
		}
		ev, err := g.Normalize(&ipn.Notification{Gateway: "g", Headers: s.Header, Body: s.Body})
		if err != nil || ev.OrderID != "ORDER-1" || ev.Amount != "19.99" || ev.Currency != "USD" || ev.Status != ipn.StatusCompleted {
			t.Errorf("%s sample normalizes to %+v, %v", name, ev, err)
		}
	}
	if simulated == 0 {
		t.Fatal("no kind has a Sample")
	}
}

// TestReadmeListsTheKinds: the README's "Kinds in this build:" paragraph
// names exactly the registry's kinds (parenthesised remarks aside).
func TestReadmeListsTheKinds(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, para, ok := strings.Cut(string(b), "Kinds in this build:")
	if !ok {
		t.Fatal(`README.md has no "Kinds in this build:" paragraph`)
	}
	para, _, _ = strings.Cut(para, "\n\n")
	para = regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(para, "")
	para, _, _ = strings.Cut(para, ".") // the list ends the first sentence
	var listed []string
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(para, -1) {
		listed = append(listed, m[1])
	}
	slices.Sort(listed)
	if !slices.Equal(listed, gateway.Kinds()) {
		t.Errorf("README lists the kinds %v, this build has %v", listed, gateway.Kinds())
	}
}
