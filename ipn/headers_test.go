package ipn_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"ipnd/ipn"
)

// A request that repeats an identifying header is refused (400): the
// signature covers one value, and which one names the message would be
// the reader's guess.
func TestRepeatedSignatureHeadersRefused(t *testing.T) {
	r := newRig(t, nil)
	now := time.Now().Unix()
	body := `{"type":"payment.completed","data":{"order_id":"O1","amount":"5.00","currency":"EUR"}}`
	h := jsonHeader(webhookHeader(swSecret, "msg_1", now, body))
	h.Add("Webhook-Id", "msg_other")
	resp, text := r.do(t, "POST", "/ipn/test", h, body)
	if resp.StatusCode != http.StatusBadRequest || r.obs.get("rejected/test/malformed") != 1 {
		t.Errorf("two webhook-id headers: HTTP %d %q, rejected/malformed %d; want 400 counted", resp.StatusCode, text, r.obs.get("rejected/test/malformed"))
	}
	if st, _ := r.db.Stats(); st.LastID != 0 {
		t.Errorf("last id %d, want nothing stored", st.LastID)
	}
	h = jsonHeader(webhookHeader(swSecret, "msg_1", now, body))
	if resp, _ := r.do(t, "POST", "/ipn/test", h, body); resp.StatusCode != 200 {
		t.Errorf("one webhook-id header: HTTP %d", resp.StatusCode)
	}
}

// The PayPal postback goes through HTTPS_PROXY when it is set (a VPS that
// reaches the internet only through a proxy). net/http reads the proxy
// environment once per process, so the postback runs in a child process
// of this test binary with HTTPS_PROXY pointing at a proxy that records
// the CONNECT it gets.
func TestPayPalPostbackUsesProxy(t *testing.T) {
	if os.Getenv("IPND_TEST_PROXY_CHILD") == "1" {
		g := mustGateway(t, ipn.GatewayConfig{Name: "paypal", Kind: "paypal", VerifyURL: "https://ipnpb.paypal.test/cgi-bin/webscr"})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.(ipn.Verifier).Verify(ctx, &ipn.Notification{Body: []byte("txn_id=T1")})
		return
	}
	connects := make(chan string, 1)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case connects <- r.Method + " " + r.Host:
		default:
		}
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer proxy.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPayPalPostbackUsesProxy$", "-test.count=1")
	cmd.Env = append(os.Environ(), "IPND_TEST_PROXY_CHILD=1", "HTTPS_PROXY="+proxy.URL, "NO_PROXY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	select {
	case got := <-connects:
		if got != "CONNECT ipnpb.paypal.test:443" {
			t.Errorf("proxy got %q, want CONNECT ipnpb.paypal.test:443", got)
		}
	default:
		t.Errorf("the postback did not go through HTTPS_PROXY\n%s", out)
	}
}
