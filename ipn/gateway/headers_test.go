package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// The PayPal postback goes through HTTPS_PROXY when it is set (a VPS that
// reaches the internet only through a proxy). net/http reads the proxy
// environment once per process, so the postback runs in a child process
// of this test binary with HTTPS_PROXY pointing at a proxy that records
// the CONNECT it gets.
func TestPayPalPostbackUsesProxy(t *testing.T) {
	if os.Getenv("IPND_TEST_PROXY_CHILD") == "1" {
		g := mustGateway(t, gateway.Config{Name: "paypal", Kind: "paypal", VerifyURL: "https://ipnpb.paypal.test/cgi-bin/webscr"})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.(interface {
			Verify(context.Context, *ipn.Notification) error
		}).Verify(ctx, &ipn.Notification{Body: []byte("txn_id=T1")})
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
