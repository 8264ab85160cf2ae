package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// promtoolInstallHint says how to get promtool; .ci/run does the same.
const promtoolInstallHint = `promtool is needed to check deploy/alerts.yml. make test fetches it:
    ./scripts/install-promtool.sh   # the binary alone into ~/.cache/ipnd/tools (no package, no service); prints that directory
then add the directory it prints to PATH, or set PROMTOOL=/path/to/promtool.`

// promtool finds the promtool binary (PROMTOOL, else $PATH). A missing
// promtool fails the test: the rules would otherwise ship unchecked.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("%v\n%s", err, promtoolInstallHint)
	}
	return p
}

// TestAlertRules runs `promtool check rules` on deploy/alerts.yml (syntax,
// PromQL, templates) and `promtool test rules` on deploy/alerts_test.yml
// (each alert fires on the example series, and stays quiet otherwise).
func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "deploy/alerts.yml"},
		{"test", "rules", "deploy/alerts_test.yml"},
		{"check", "rules", "deploy/alerts-optional.yml"},
		{"test", "rules", "deploy/alerts-optional_test.yml"},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestAlertMetricsExist scrapes a running ipnd and checks that every ipnd_
// metric the alerting rules use is exported under that name, so that a
// renamed metric cannot leave an alert silently matching nothing.
func TestAlertMetricsExist(t *testing.T) {
	rules, err := os.ReadFile("deploy/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	optional, err := os.ReadFile("deploy/alerts-optional.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules = append(rules, optional...)
	var used []string
	for _, name := range regexp.MustCompile(`\bipnd_[a-z0-9_]+`).FindAllString(string(rules), -1) {
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			name = strings.TrimSuffix(name, suffix)
		}
		if !slices.Contains(used, name) {
			used = append(used, name)
		}
	}
	if len(used) < 5 {
		t.Fatalf("found only %v in deploy/alerts.yml", used)
	}

	dir := t.TempDir()
	getenv := envFunc(append([]string{"IPND_SERVER_LISTEN", "127.0.0.1:0", "IPND_ADMIN_LISTEN", "127.0.0.1:0",
		"IPND_ADMIN_TOKEN", "t", "IPND_LOG_LEVEL", "warn"}, testStoreEnv(t, dir)...)...)
	startServe(t, getenv, dir)
	addr := func(which string) string {
		b, err := os.ReadFile(filepath.Join(dir, which+".addr"))
		if err != nil {
			t.Fatal(err)
		}
		return "http://" + strings.TrimSpace(string(b))
	}
	// Counter vectors without a series are not exposed: make one rejection.
	resp, err := http.Post(addr("public")+"/ipn/no-such-gateway", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", addr("admin")+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			exported[strings.Fields(rest)[0]] = true
		}
	}
	// Exported only when configured (a license pool product): the
	// fulfilment tests check it (TestFulfilmentFromPayment).
	exported["ipnd_license_pool_remaining"] = true
	for _, name := range used {
		if !exported[name] {
			t.Errorf("deploy/alerts.yml uses %s, which ipnd does not export", name)
		}
	}
}

// The unit reloads with `systemctl reload` (SIGHUP) and passes
// systemd-analyze verify where systemd is installed (Debian's systemd
// package, as on this project's CI image).
func TestUnitReloads(t *testing.T) {
	unit, err := os.ReadFile("deploy/ipnd.service")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ExecReload=/bin/kill -HUP \$MAINPID$`).Match(unit) {
		t.Error("deploy/ipnd.service has no ExecReload=/bin/kill -HUP $MAINPID")
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit's syntax is not verified here")
		return
	}
	// Verify a copy whose ExecStart names a binary that exists here.
	tmp := filepath.Join(t.TempDir(), "ipnd.service")
	os.WriteFile(tmp, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/ipnd", "/bin/true")), 0o644)
	if out, err := exec.Command(analyze, "verify", tmp).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitMayBindLowPorts: the shipped unit lets ipnd bind :443 and :80
// (ACME) and nothing more.
func TestUnitMayBindLowPorts(t *testing.T) {
	unit, err := os.ReadFile("deploy/ipnd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", "\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n", "\nNoNewPrivileges=yes\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("deploy/ipnd.service lacks %q", strings.TrimSpace(want))
		}
	}
}
