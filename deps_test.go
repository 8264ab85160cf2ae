package main

import (
	"os/exec"
	"strings"
	"testing"
)

// anyIpnd, as a forbidden import, stands for every package of ipnd but
// the one checked.
const anyIpnd = "ipnd/..."

// TestImportRules guards the layering (dependencies point inward, to the
// domain): ipn, the domain, imports none of ipnd's other packages and no
// HTTP; the gateway adapters import the domain only; the transaction
// that records a decision (record) knows no storage; the public
// handlers and the pipeline reach the store, delivery and metrics through
// interfaces they declare, never by import; metrics and the timing
// helpers import nothing of ipnd's. go list -deps: indirect imports count.
func TestImportRules(t *testing.T) {
	for _, rule := range []struct {
		pkg       string
		forbidden []string
	}{
		{"ipnd/ipn", []string{anyIpnd, "net/http", "github.com/julienschmidt/httprouter"}},
		{"ipnd/ipn/gateway", []string{"ipnd/store", "ipnd/notify", "ipnd/metrics", "ipnd/admin", "ipnd/public", "ipnd/pipeline"}},
		{"ipnd/public", []string{"ipnd/store", "ipnd/notify", "ipnd/metrics", "ipnd/admin", "ipnd/pipeline"}},
		{"ipnd/pipeline", []string{"ipnd/store", "ipnd/notify", "ipnd/metrics", "ipnd/admin", "ipnd/public"}},
		{"ipnd/record", []string{"ipnd/ipn/gateway", "ipnd/store", "ipnd/store/pg", "ipnd/notify", "ipnd/metrics", "ipnd/admin", "ipnd/public", "ipnd/pipeline", "go.etcd.io/bbolt", "github.com/jackc/pgx/v5", "net/http"}},
		{"ipnd/store", []string{"ipnd/ipn/gateway", "ipnd/notify", "ipnd/metrics", "ipnd/admin", "ipnd/public", "ipnd/pipeline"}},
		{"ipnd/notify", []string{"ipnd/store", "ipnd/metrics", "ipnd/admin", "ipnd/public", "ipnd/pipeline"}},
		{"ipnd/fulfil", []string{"ipnd/ipn/gateway", "ipnd/store", "ipnd/notify", "ipnd/metrics", "ipnd/admin", "ipnd/public", "ipnd/pipeline", "net/http"}},
		{"ipnd/admin/ui", []string{"ipnd/notify", "ipnd/metrics", "ipnd/pipeline"}},
		{"ipnd", []string{"github.com/chromedp/chromedp"}}, // the browser tests only
		{"ipnd/metrics", []string{anyIpnd}},
		{"ipnd/internal/backoff", []string{anyIpnd}},
	} {
		out, err := exec.Command("go", "list", "-deps", rule.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", rule.pkg, err)
		}
		for _, d := range strings.Fields(string(out)) {
			for _, f := range rule.forbidden {
				if d == f || (f == anyIpnd && d != rule.pkg && (d == "ipnd" || strings.HasPrefix(d, "ipnd/"))) {
					t.Errorf("%s imports %s", rule.pkg, d)
				}
			}
		}
	}
}
