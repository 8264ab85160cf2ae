package notify

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestDeliveryExpiryInLocalZone: a download link's expiry is shown in
// the daemon's zone (TZ) when the item comes back from the store in UTC,
// as the binary outbox layout reads it (review23c: under
// TZ=Europe/Berlin the email said "17:40 UTC" where it said "18:40 CET").
// The zone is the process's, so the check runs in a child with TZ set.
func TestDeliveryExpiryInLocalZone(t *testing.T) {
	if os.Getenv("IPND_TEST_TZ_CHILD") == "" {
		if _, err := time.LoadLocation("Europe/Berlin"); err != nil {
			t.Fatalf("no zone data for Europe/Berlin: %v", err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestDeliveryExpiryInLocalZone$", "-test.v")
		cmd.Env = append(os.Environ(), "IPND_TEST_TZ_CHILD=1", "TZ=Europe/Berlin")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestDeliveryExpiryInLocalZone") {
			t.Fatalf("child with TZ=Europe/Berlin: %v\n%s", err, out)
		}
		return
	}
	exp := time.Date(2026, 12, 13, 17, 40, 0, 0, time.UTC) // as stored
	it := ipn.OutboxItem{ID: 1, Effect: ipn.Effect{Kind: ipn.EffectEmailCustomer, Template: ipn.TemplatePaymentReceived,
		To: "buyer@example.com", Order: &ipn.OrderSnapshot{Status: ipn.OrderPaid, Currency: "EUR", Paid: "10.00",
			Deliveries: []ipn.Delivered{{Product: "p", ProductName: "Product", DownloadURL: "https://example.com/dl/t", DownloadsLeft: 5, ExpiresAt: exp}}}}}
	w := NewWorker(WorkerOptions{Outbox: nil, Templates: mustLoadTemplates(t, ""), From: "shop@example.com"})
	msg, skip, err := w.message(it, &ipn.Order{ID: "A-1", Status: ipn.OrderPaid})
	if err != nil || skip != "" {
		t.Fatalf("message: %v %q", err, skip)
	}
	if want := "until 2026-12-13 18:40 CET"; !strings.Contains(msg.Text, want) || !strings.Contains(msg.HTML, want) {
		t.Fatalf("%q missing:\n%s", want, msg.Text)
	}
}
