package notify

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// updateGolden rewrites testdata/*.golden: go test ./notify -update
var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenData is the data every golden file is rendered with.
var goldenData = TemplateData{
	MerchantName:     "Example Shop",
	OrderID:          "A-1001",
	Amount:           "25.00",
	Currency:         "EUR",
	Paid:             "25.00",
	Refunded:         "5.00",
	CustomerName:     "Ada Lovelace",
	CustomerEmail:    "ada@example.net",
	Reason:           "review: amount_mismatch (payment 9H123 completed 20.00 EUR)",
	Status:           "review",
	TxnID:            "9H123",
	DownloadURL:      "https://shop.example.com/download/A-1001?token=abc&lang=en",
	Description:      "The Analytical Engine, e-book",
	Notification:     42,
	OrderStatus:      "review",
	Expected:         "25.00",
	ExpectedCurrency: "EUR",
	Gateway:          "paypal",
	ReviewReasons:    ReviewReasons([]string{"amount_mismatch"}),
	Deliveries: []ipn.Delivered{
		{Product: "engine-book", ProductName: "The Analytical Engine (EPUB)", DownloadURL: "https://shop.example.com/dl/tok1",
			DownloadsLeft: 5, ExpiresAt: time.Date(2026, 12, 13, 10, 0, 0, 0, time.UTC)},
		{Product: "engine-sim", ProductName: "Engine simulator", DownloadURL: "https://shop.example.com/dl/tok2",
			DownloadsLeft: 3, ExpiresAt: time.Date(2026, 12, 13, 10, 0, 0, 0, time.UTC), LicenseKey: "ABCDE-FGHJK-MNPQR-STUVW"},
	},
}

func mustLoadTemplates(t *testing.T, dir string) *Templates {
	t.Helper()
	tmpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatalf("LoadTemplates(%q): %v", dir, err)
	}
	return tmpl
}

// goldenText is how a rendered email is kept in testdata.
func goldenText(subject, text, html string) string {
	return "Subject: " + subject + "\n-- text --\n" + text + "\n-- html --\n" + html
}

func TestTemplatesGolden(t *testing.T) {
	tmpl := mustLoadTemplates(t, "")
	for _, name := range TemplateNames() {
		t.Run(name, func(t *testing.T) {
			subject, text, html, err := tmpl.Render(name, goldenData)
			if err != nil {
				t.Fatalf("Render(%s): %v", name, err)
			}
			got := goldenText(subject, text, html)
			path := filepath.Join("testdata", name+".golden")
			if *updateGolden {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./notify -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Render(%s) differs from %s (go test ./notify -update rewrites it)\ngot:\n%s\nwant:\n%s", name, path, got, want)
			}
		})
	}
}

func TestTemplateNamesAreIPNs(t *testing.T) {
	want := []string{ipn.TemplatePaymentReceived, ipn.TemplatePaymentPending, ipn.TemplateRefundIssued,
		ipn.TemplatePaymentFailed, ipn.TemplateSubscriptionStarted, ipn.TemplateSubscriptionCanceled,
		ipn.TemplateOrderReview, ipn.TemplateDisputeOpened, ipn.TemplateDisputeClosed, ipn.TemplateVerificationFailed,
		ipn.TemplateEventUnmatched}
	if got := TemplateNames(); !slices.Equal(got, want) {
		t.Errorf("TemplateNames() = %v, want %v", got, want)
	}
	names := TemplateNames()
	names[0] = "changed"
	if TemplateNames()[0] == "changed" {
		t.Error("TemplateNames returns the package's own slice")
	}
}

func TestTemplatesDownloadLink(t *testing.T) {
	tmpl := mustLoadTemplates(t, "")
	for _, name := range []string{ipn.TemplatePaymentReceived, ipn.TemplateSubscriptionStarted} {
		t.Run(name, func(t *testing.T) {
			with := goldenData
			with.DownloadURL = "https://shop.example.com/dl/1"
			_, text, html, err := tmpl.Render(name, with)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text, with.DownloadURL) || !strings.Contains(html, `href="https://shop.example.com/dl/1"`) {
				t.Errorf("with DownloadURL: the link is missing\ntext:\n%s\nhtml:\n%s", text, html)
			}
			without := goldenData
			without.DownloadURL, without.Deliveries = "", nil
			_, text, html, err = tmpl.Render(name, without)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(strings.ToLower(text), "download") || strings.Contains(strings.ToLower(html), "download") ||
				strings.Contains(html, "href") {
				t.Errorf("without DownloadURL: a download link appears\ntext:\n%s\nhtml:\n%s", text, html)
			}
		})
	}
}

// TestTemplatesDeliveries: the payment email lists every link issued
// (SPEC §11), with its product, limit, expiry and license key.
func TestTemplatesDeliveries(t *testing.T) {
	tmpl := mustLoadTemplates(t, "")
	_, text, html, err := tmpl.Render(ipn.TemplatePaymentReceived, goldenData)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range goldenData.Deliveries {
		for _, want := range []string{d.DownloadURL, d.ProductName, "until 2026-12-13 10:00 UTC"} {
			if !strings.Contains(text, want) || !strings.Contains(html, want) {
				t.Errorf("%q missing\ntext:\n%s\nhtml:\n%s", want, text, html)
			}
		}
		if d.LicenseKey != "" && (!strings.Contains(text, "License key: "+d.LicenseKey) || !strings.Contains(html, d.LicenseKey)) {
			t.Errorf("license key %q missing", d.LicenseKey)
		}
	}
}

func TestTemplatesHTMLEscaping(t *testing.T) {
	tmpl := mustLoadTemplates(t, "")
	d := goldenData
	d.CustomerName = `<script>alert("x")</script>`
	d.Description = `<img src=x onerror=alert(1)>`
	d.CustomerEmail = `"><b>bold</b>@example.net`
	d.Reason = `<a href="https://evil.example">click</a>`
	d.DownloadURL = `javascript:alert(1)`
	for _, name := range TemplateNames() {
		_, _, html, err := tmpl.Render(name, d)
		if err != nil {
			t.Fatalf("Render(%s): %v", name, err)
		}
		for _, bad := range []string{"<script>", "<img", "<b>bold", `<a href="https://evil`, "javascript:"} {
			if strings.Contains(html, bad) {
				t.Errorf("Render(%s): HTML contains %q unescaped:\n%s", name, bad, html)
			}
		}
	}
	_, text, html, err := tmpl.Render(ipn.TemplatePaymentReceived, d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Errorf("customer name not escaped as expected:\n%s", html)
	}
	if !strings.Contains(text, d.CustomerName) {
		t.Errorf("text part does not show the name as given:\n%s", text)
	}
}

func TestTemplatesSubjectOneLine(t *testing.T) {
	tmpl := mustLoadTemplates(t, "")
	d := goldenData
	d.OrderID = "A-1\r\nBcc: victim@example.net"
	d.MerchantName = "Shop\n\nInjected"
	d.Reason = "a\nb"
	for _, name := range TemplateNames() {
		subject, _, _, err := tmpl.Render(name, d)
		if err != nil {
			t.Fatalf("Render(%s): %v", name, err)
		}
		if subject == "" || strings.ContainsAny(subject, "\r\n") {
			t.Errorf("Render(%s): subject %q, want one non-empty line", name, subject)
		}
	}
}

func TestTemplatesRenderUnknown(t *testing.T) {
	tmpl := mustLoadTemplates(t, "")
	if _, _, _, err := tmpl.Render("no_such_template", goldenData); !Permanent(err) {
		t.Errorf("Render(no_such_template): got %v, want a permanent error", err)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTemplatesOverride(t *testing.T) {
	embedded := mustLoadTemplates(t, "")
	dir := writeFiles(t, map[string]string{
		"payment_received.txt": "Subject: Thanks {{.CustomerName}}, order {{.OrderID}} is paid\r\n\r\n\r\nCustom body for {{.OrderID}}.\n",
		"README.md":            "not a template: ignored",
	})
	overridden := mustLoadTemplates(t, dir)

	subject, text, html, err := overridden.Render(ipn.TemplatePaymentReceived, goldenData)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Thanks Ada Lovelace, order A-1001 is paid"; subject != want {
		t.Errorf("overridden subject: got %q, want %q", subject, want)
	}
	if want := "Custom body for A-1001.\n"; text != want {
		t.Errorf("overridden text: got %q, want %q", text, want)
	}
	_, _, embeddedHTML, err := embedded.Render(ipn.TemplatePaymentReceived, goldenData)
	if err != nil {
		t.Fatal(err)
	}
	if html != embeddedHTML {
		t.Errorf("payment_received.html was not overridden but differs from the embedded one:\n%s", html)
	}
	for _, name := range TemplateNames() {
		if name == ipn.TemplatePaymentReceived {
			continue
		}
		s1, t1, h1, err1 := embedded.Render(name, goldenData)
		s2, t2, h2, err2 := overridden.Render(name, goldenData)
		if err1 != nil || err2 != nil || s1 != s2 || t1 != t2 || h1 != h2 {
			t.Errorf("%s: not overridden but renders differently (errors %v, %v)", name, err1, err2)
		}
	}
}

func TestTemplatesOverrideErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string // in the error
	}{
		{"text syntax", map[string]string{"refund_issued.txt": "Subject: x\n\n{{if .OrderID}}unclosed\n"}, "refund_issued.txt"},
		{"html syntax", map[string]string{"dispute_opened.html": "<p>{{.OrderID</p>"}, "dispute_opened.html"},
		{"subject syntax", map[string]string{"order_review.txt": "Subject: {{.OrderID\n\nbody\n"}, "order_review.txt"},
		{"no subject line", map[string]string{"payment_failed.txt": "Hello {{.CustomerName}}\n"}, "payment_failed.txt"},
		{"unknown field", map[string]string{"payment_pending.html": "<p>{{.Nope}}</p>"}, "payment_pending.html"},
		{"unknown template file", map[string]string{"payment_recieved.txt": "Subject: typo\n"}, "payment_recieved.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, tc.files)
			_, err := LoadTemplates(dir)
			if err == nil {
				t.Fatalf("LoadTemplates accepted %v", tc.files)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadTemplates: error %q does not name %s", err, tc.want)
			}
		})
	}
	t.Run("missing dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "absent")
		if _, err := LoadTemplates(dir); err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("LoadTemplates(%q): got %v, want a not-exist error", dir, err)
		}
	})
}

func TestMessageID(t *testing.T) {
	a := MessageID("A-1/paid/payment_received", "shop.example.com")
	if a != MessageID("A-1/paid/payment_received", "shop.example.com") {
		t.Error("MessageID is not stable")
	}
	if a == MessageID("A-1/pending/payment_pending", "shop.example.com") {
		t.Error("two causes share a Message-ID")
	}
	if want := "<" + strings.TrimPrefix(a, "<")[:32] + "@shop.example.com>"; a != want || len(a) != len(want) {
		t.Errorf("MessageID = %q, want the form <32 hex digits@shop.example.com>", a)
	}
	if _, err := bareMessageID(a); err != nil {
		t.Errorf("MessageID %q does not validate: %v", a, err)
	}
	for _, domain := range []string{"", "a b", "x>y", "a@b"} {
		if got := MessageID("c", domain); !strings.HasSuffix(got, "@ipnd.invalid>") {
			t.Errorf("MessageID(c, %q) = %q, want the ipnd.invalid domain", domain, got)
		}
	}
}

func TestPermanent(t *testing.T) {
	if Permanent(nil) || Permanent(errors.New("x")) || Permanent(os.ErrDeadlineExceeded) {
		t.Error("Permanent is true for an ordinary error")
	}
	err := permanent(errors.New("bad address"))
	if !Permanent(err) || !errors.Is(err, ErrPermanent) {
		t.Error("permanent() is not Permanent")
	}
}
