package notify

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	texttemplate "text/template"
	"time"

	"ipnd/ipn"
)

//go:embed templates/*.txt templates/*.html
var embeddedTemplates embed.FS

// templateNames lists every email template, customer's first.
var templateNames = []string{
	ipn.TemplatePaymentReceived,
	ipn.TemplatePaymentPending,
	ipn.TemplateRefundIssued,
	ipn.TemplatePaymentFailed,
	ipn.TemplateSubscriptionStarted,
	ipn.TemplateSubscriptionCanceled,
	ipn.TemplateOrderReview,
	ipn.TemplateDisputeOpened,
	ipn.TemplateDisputeClosed,
	ipn.TemplateVerificationFailed,
	ipn.TemplateEventUnmatched,
}

// TemplateData is what a template can show. Amount and Currency are the
// amount the email is about (the payment, the refund, the disputed sum);
// Paid and Refunded are the order's totals. Every amount is an exact
// decimal string, displayed as given. DownloadURL comes from the order's
// metadata "download_url"; the download link appears only when it is
// set. Reason is why an order is in review, a dispute's reason or why a
// notification failed verification; Notification is the log id of the
// notification behind the email. Status is the payment's status (the
// event's: completed, pending, ...), OrderStatus the order's after the
// change (paid, review, ...). Expected and ExpectedCurrency are the
// amount registered for the order ("" when it was not registered);
// Gateway is the configured name of the order's gateway;
// ReviewReasons says in words why an order is in review, one sentence
// per flag it carries.
type TemplateData struct {
	MerchantName, OrderID, Amount, Currency, Paid, Refunded, CustomerName, CustomerEmail,
	Reason, Status, TxnID, DownloadURL, Description string
	Notification                                     uint64
	OrderStatus, Expected, ExpectedCurrency, Gateway string
	ReviewReasons                                    []string
	// Deliveries are the download links and license keys the order was
	// given when it was paid (SPEC §11): Product, ProductName,
	// DownloadURL, DownloadsLeft, ExpiresAt, LicenseKey ("" when none).
	Deliveries []ipn.Delivered
}

// reviewWords says what each review flag means to the merchant.
var reviewWords = map[string]string{
	ipn.FlagAmountMismatch:   "the amount received differs from the amount expected (a buyer may have edited the price in the payment form)",
	ipn.FlagCurrencyMismatch: "the payment is in another currency than the order",
	ipn.FlagReceiverMismatch: "the money went to an account that is not one of yours (receivers in the config)",
	ipn.FlagTestPayment:      "a test (sandbox) payment arrived for a real order or on a live gateway: no real money moved",
	ipn.FlagDoublePayment:    "a second completed payment arrived for an order already paid, under another transaction id",
	ipn.FlagUnknownProduct:   "the order names a product that is not in the config ([[product]]): nothing was delivered",
	"license_pool_empty":     "a product's license pool has no key left: nothing was delivered (append keys to its license_pool file)",
}

// ReviewReasons returns a sentence for each review flag (the flag
// itself for one it does not know).
func ReviewReasons(flags []string) []string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if w, ok := reviewWords[f]; ok {
			out = append(out, f+": "+w)
		} else {
			out = append(out, f)
		}
	}
	return out
}

// Templates are the parsed email templates, read-only once loaded and
// safe for concurrent use.
//
// Every email has two template files named after it (see TemplateNames):
// NAME.txt, a text/template, and NAME.html, an html/template, so every
// value is escaped for its HTML context (and a DownloadURL that is not
// http(s) is neutralised). The first line of NAME.txt is the subject,
// written "Subject: ..." and itself a template; it cannot span lines,
// and it is rendered on its own then folded to one line, so a value
// with a newline in it cannot inject a header. The text body is the rest
// of the file from its first non-blank character on.
//
// The defaults are embedded in the binary; LoadTemplates takes a
// directory whose files replace the embedded ones of the same name, one
// file at a time. The embedded customer templates do not show Reason
// (the state machine fills it with an internal description); the
// merchant ones do.
type Templates struct {
	set map[string]*emailTemplate
}

type emailTemplate struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

// subjectPrefix starts the first line of every text template.
const subjectPrefix = "Subject:"

// sampleTemplateData fills every field, to try each template once at
// load time so that a reference to a field that does not exist fails
// LoadTemplates rather than the first email.
var sampleTemplateData = TemplateData{
	MerchantName: "Shop", OrderID: "order-1", Amount: "10.00", Currency: "USD", Paid: "10.00",
	Refunded: "0.00", CustomerName: "Customer", CustomerEmail: "customer@example.com",
	Reason: "reason", Status: "paid", TxnID: "txn-1", DownloadURL: "https://example.com/download",
	Description: "description", Notification: 1, OrderStatus: "review", Expected: "12.00", ExpectedCurrency: "USD",
	Gateway: "paypal", ReviewReasons: []string{"reason"},
	Deliveries: []ipn.Delivered{{Product: "p", ProductName: "Product", DownloadURL: "https://example.com/dl/t",
		DownloadsLeft: 5, ExpiresAt: time.Unix(0, 0).UTC(), LicenseKey: "KEY"}},
}

// LoadTemplates parses the email templates: the embedded defaults, each
// replaced by the file of the same name (NAME.txt, NAME.html) in
// overrideDir when there is one. An empty overrideDir means the defaults
// only.
//
// It fails, naming the file, when overrideDir does not exist, when it
// holds a .txt or .html file that is not a template name (a typo would
// otherwise be silently ignored), when a template does not parse, when a
// text template has no "Subject:" first line, or when a template fails
// on sample data (for instance it names a field TemplateData lacks).
func LoadTemplates(overrideDir string) (*Templates, error) {
	if overrideDir != "" {
		if err := checkOverrideDir(overrideDir); err != nil {
			return nil, err
		}
	}
	t := &Templates{set: make(map[string]*emailTemplate, len(templateNames))}
	for _, name := range templateNames {
		et := &emailTemplate{}

		src, file, err := templateSource(overrideDir, name+".txt")
		if err != nil {
			return nil, err
		}
		subject, body, _ := strings.Cut(src, "\n")
		subject = strings.TrimSuffix(subject, "\r")
		if !strings.HasPrefix(subject, subjectPrefix) {
			return nil, fmt.Errorf("template %s: first line must be %q", file, subjectPrefix+" ...")
		}
		// The subject line becomes a comment that trims the white space
		// after it: the body starts at its first non-blank line, and
		// line numbers in errors still match the file.
		body = "{{/* subject */ -}}\n" + body
		if et.subject, err = texttemplate.New(name + ".subject").Parse(strings.TrimPrefix(subject, subjectPrefix)); err != nil {
			return nil, fmt.Errorf("template %s: subject: %w", file, err)
		}
		if et.text, err = texttemplate.New(name + ".txt").Parse(body); err != nil {
			return nil, fmt.Errorf("template %s: %w", file, err)
		}
		if err := et.subject.Execute(io.Discard, sampleTemplateData); err != nil {
			return nil, fmt.Errorf("template %s: subject: %w", file, err)
		}
		if err := et.text.Execute(io.Discard, sampleTemplateData); err != nil {
			return nil, fmt.Errorf("template %s: %w", file, err)
		}

		src, file, err = templateSource(overrideDir, name+".html")
		if err != nil {
			return nil, err
		}
		if et.html, err = htmltemplate.New(name + ".html").Parse(src); err != nil {
			return nil, fmt.Errorf("template %s: %w", file, err)
		}
		if err := et.html.Execute(io.Discard, sampleTemplateData); err != nil {
			return nil, fmt.Errorf("template %s: %w", file, err)
		}
		t.set[name] = et
	}
	return t, nil
}

// checkOverrideDir fails when dir is not a directory or holds a template
// file with an unknown name.
func checkOverrideDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("templates dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if e.IsDir() || (ext != ".txt" && ext != ".html") {
			continue
		}
		if !slices.Contains(templateNames, strings.TrimSuffix(name, ext)) {
			return fmt.Errorf("templates dir: %s is not a template (known: %s)",
				filepath.Join(dir, name), strings.Join(templateNames, ", "))
		}
	}
	return nil
}

// templateSource returns the text of one template file, from overrideDir
// if it has the file, else embedded, and a name for it in errors.
func templateSource(overrideDir, file string) (src, where string, err error) {
	if overrideDir != "" {
		path := filepath.Join(overrideDir, file)
		b, err := os.ReadFile(path)
		if err == nil {
			return string(b), path, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", path, fmt.Errorf("template %s: %w", path, err)
		}
	}
	b, err := embeddedTemplates.ReadFile("templates/" + file)
	if err != nil {
		return "", file, fmt.Errorf("template %s: %w", file, err) // a template missing from the build
	}
	return string(b), "embedded " + file, nil
}

// TemplateNames lists every email template: the customer's
// (payment_received, payment_pending, refund_issued, payment_failed,
// subscription_started, subscription_canceled) then the merchant's
// (order_review, dispute_opened, dispute_closed, verification_failed,
// event_unmatched). They are the
// ipn.Template* names.
func TemplateNames() []string {
	return slices.Clone(templateNames)
}

// Render renders one email: its subject (one line), text body and HTML
// body. Every error is permanent (errors.Is(err, ErrPermanent)): an
// unknown template name or a template that fails on d will fail the same
// way on every retry.
func (t *Templates) Render(name string, d TemplateData) (subject, text, html string, err error) {
	et, ok := t.set[name]
	if !ok {
		return "", "", "", permanent(fmt.Errorf("render: unknown template %q", name))
	}
	var b bytes.Buffer
	if err := et.subject.Execute(&b, d); err != nil {
		return "", "", "", permanent(fmt.Errorf("render %s subject: %w", name, err))
	}
	subject = oneLine(b.String())
	b.Reset()
	if err := et.text.Execute(&b, d); err != nil {
		return "", "", "", permanent(fmt.Errorf("render %s.txt: %w", name, err))
	}
	text = b.String()
	b.Reset()
	if err := et.html.Execute(&b, d); err != nil {
		return "", "", "", permanent(fmt.Errorf("render %s.html: %w", name, err))
	}
	return subject, text, b.String(), nil
}
