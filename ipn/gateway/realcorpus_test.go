package gateway_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// The corpus of published payloads (testdata/real): each file is a byte for
// byte copy of a payload published by the gateway or an SDK (a test
// fixture, or the exact value of a literal in a test), cited by repository,
// commit and path in manifest.json, with what its source asserts. Where the
// source publishes a signature and its secret, ipnd must accept that
// signature as published. See testdata/real/README.md.
const realCorpusDir = "../../testdata/real"

type realSource struct {
	Repo    string `json:"repo"`
	Commit  string `json:"commit"`
	Path    string `json:"path"`
	Lines   string `json:"lines"`
	Extract string `json:"extract"`
}

type realEntry struct {
	File string `json:"file"`
	// SHA256 of the file's bytes, as copied from the source: an edit of
	// the file (an editor's final newline, a reformat) fails the test.
	SHA256        string     `json:"sha256"`
	Kind          string     `json:"kind"`
	Preset        string     `json:"preset"`
	Source        realSource `json:"source"`
	SourceAsserts string     `json:"source_asserts"`
	Note          string     `json:"note"`
	// Signature: the secret and, when Published, the headers exactly as the
	// source publishes them; At is the time they were signed at (the
	// check's clock is set to it); Body "trimmed" means the source signs
	// the file with surrounding white space stripped (its test does so).
	// Without Published, the test signs the file itself with the secret.
	Signature *struct {
		Published bool              `json:"published"`
		Secret    string            `json:"secret"`
		At        int64             `json:"at"`
		Body      string            `json:"body"`
		Headers   map[string]string `json:"headers"`
	} `json:"signature"`
	Expect corpusExpect `json:"expect"`
	Order  string       `json:"order"`
}

func loadRealCorpus(t *testing.T) []realEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(realCorpusDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m []realEntry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	listed := map[string]bool{}
	for _, e := range m {
		s := e.Source
		if s.Repo == "" || len(s.Commit) != 40 || s.Path == "" || s.Extract == "" || e.SourceAsserts == "" || e.Kind == "" || e.Expect.Type == "" {
			t.Errorf("manifest entry %s lacks its source (repo, 40-hex commit, path, extract), what the source asserts, kind or expected type", e.File)
		}
		if _, err := hex.DecodeString(s.Commit); err != nil {
			t.Errorf("%s: commit %q is not hex", e.File, s.Commit)
		}
		listed[e.File] = true
	}
	filepath.WalkDir(realCorpusDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !slices.Contains([]string{"manifest.json", "README.md", ".gitattributes"}, filepath.Base(p)) {
			rel, _ := filepath.Rel(realCorpusDir, p)
			if !listed[filepath.ToSlash(rel)] {
				t.Errorf("%s is not in manifest.json", rel)
			}
		}
		return nil
	})
	return m
}

// realGateway is the gateway of e configured with the source's secret.
func realGateway(t *testing.T, e realEntry, presets map[string]gateway.Config) gateway.Gateway {
	t.Helper()
	c := gateway.Config{Name: e.Kind, Kind: e.Kind}
	switch e.Kind {
	case "paypal":
		c.Sandbox, c.VerifyURL = true, "https://ipnpb.sandbox.paypal.com/cgi-bin/webscr"
	case "hmac":
		p, ok := presets[e.Preset]
		if !ok {
			t.Fatalf("%s: no preset %q in config.example.toml", e.File, e.Preset)
		}
		c = p
	}
	if e.Signature != nil {
		c.Secrets = []string{e.Signature.Secret}
	}
	return mustGateway(t, c)
}

// realRequest is the request ipnd receives for e: the file's bytes (trimmed
// where the source signs them trimmed), the published headers, and the
// time of the check (the signing time where the source names one).
func realRequest(t *testing.T, e realEntry, now time.Time) *gateway.Inbound {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(realCorpusDir, e.File))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != e.SHA256 {
		t.Fatalf("%s: sha256 %x, the manifest says %s: the file is no longer the published bytes", e.File, sum, e.SHA256)
	}
	mt := "application/json"
	if strings.HasSuffix(e.File, ".form") {
		mt = "application/x-www-form-urlencoded"
	}
	h := http.Header{}
	if s := e.Signature; s != nil {
		if s.Body == "trimmed" {
			body = bytes.TrimSpace(body)
		}
		if s.At != 0 {
			now = time.Unix(s.At, 0)
		}
		switch {
		case s.Published:
			for k, v := range s.Headers {
				h.Set(k, v)
			}
		case e.Kind == "stripe":
			h.Set("Stripe-Signature", "t="+strconv.FormatInt(now.Unix(), 10)+",v1="+hex.EncodeToString(gateway.StripeSignature(s.Secret, now.Unix(), body)))
		case e.Kind == "hmac" && e.Preset == "paddle":
			ts := strconv.FormatInt(now.Unix(), 10)
			h.Set("Paddle-Signature", "ts="+ts+";h1="+hmacHex(sha256.New, s.Secret, ts+":"+string(body)))
		default:
			t.Fatalf("%s: no signer for an unpublished %s signature", e.File, e.Kind)
		}
	}
	return &gateway.Inbound{Header: h, Body: body, MediaType: mt, Now: now}
}

// TestPublishedPayloadCorpus: every published payload passes its gateway's
// check (with the published signature and secret, byte for byte, where the
// source publishes them; one changed byte of the body fails it), normalizes
// to what its source says, and applies to a new order idempotently.
func TestPublishedPayloadCorpus(t *testing.T) {
	presets := examplePresets(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, e := range loadRealCorpus(t) {
		t.Run(e.File, func(t *testing.T) {
			g := realGateway(t, e, presets)
			in := realRequest(t, e, now)
			key, err := g.Check(in)
			if err != nil {
				t.Fatalf("%s: Check with the source's signature = %v", e.File, err)
			}
			if e.Signature != nil {
				// The signature covers every byte: one changed byte fails it.
				bad := *in
				bad.Body = bytes.Clone(in.Body)
				bad.Body[len(bad.Body)/2] ^= 0x01
				if _, err := g.Check(&bad); !errors.Is(err, ipn.ErrBadSignature) {
					t.Errorf("%s: Check of the body with one byte changed = %v, want ErrBadSignature", e.File, err)
				}
			}
			n := &ipn.Notification{Gateway: g.Name(), ReceivedAt: in.Now, Headers: http.Header{}, Body: in.Body, DedupKey: key, ContentType: in.MediaType}
			for _, k := range g.KeepHeaders() {
				if v := in.Header.Values(k); len(v) > 0 {
					n.Headers[http.CanonicalHeaderKey(k)] = v
				}
			}
			ev, err := g.Normalize(n)
			if err != nil {
				t.Fatalf("%s: Normalize = %v", e.File, err)
			}
			assertCorpusEvent(t, e.File, ev, e.Expect, nil)
			assertNewOrderAndReplay(t, e.File, g, ev, e.Order, nil, in.Now)
		})
	}
}

// TestPublishedStripeRefundOfOldAPI: the published 2012 charge.refunded
// (refunded: true, amount 1000, no amount_refunded) refunds the whole
// charge its charge.succeeded paid: the order ends refunded 10.00 and the
// customer's refund email and the shop's callback state 10.00.
func TestPublishedStripeRefundOfOldAPI(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	byFile := map[string]realEntry{}
	for _, e := range loadRealCorpus(t) {
		byFile[e.File] = e
	}
	var o *ipn.Order
	var effects []ipn.Effect
	for i, f := range []string{"stripe/webhook-events.json.charge.succeeded.json", "stripe/webhook-events.json.charge.refunded.json"} {
		e := byFile[f]
		g := realGateway(t, e, nil)
		in := realRequest(t, e, now)
		if _, err := g.Check(in); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ev, err := g.Normalize(&ipn.Notification{Gateway: g.Name(), Body: in.Body})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ev.OrderID = "ORDER-1" // as the pipeline routes the refund by the charge id
		ac := ipn.ApplyContext{Now: now, Notification: uint64(i + 1), Gateway: g.Name(), EventKey: ipn.EventKey(g.Name(), ev), Sandbox: true}
		next, eff := ipn.Apply(o, ev, ac)
		o, effects = &next, eff
	}
	if o.Status != ipn.OrderRefunded || o.Paid != "10.00" || o.Refunded != "10.00" {
		t.Fatalf("order %s paid %s refunded %s, want refunded 10.00 of 10.00 (history %+v)", o.Status, o.Paid, o.Refunded, o.History)
	}
	callback := false
	for _, e := range effects {
		if e.Event == nil || e.Event.Amount != "10.00" || e.Event.RefundedTotal != "10.00" {
			t.Errorf("effect %s %s: event %+v, want amount and refunded_total 10.00", e.Kind, e.Template, e.Event)
		}
		callback = callback || e.Kind == ipn.EffectShopCallback
	}
	if !callback {
		t.Errorf("no shop callback for the refund: %+v", effects)
	}
}
