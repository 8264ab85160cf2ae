package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckAndServeRefuseUnsignedHMACSources: an hmac gateway whose
// timestamp or dedup key comes from a header signed_content does not
// cover is refused by ipnd check and by ipnd serve, with a line naming
// the gateway, the key and why; the same gateway with the header signed
// loads (the presets are TestExamplePresetsBuild's).
func TestCheckAndServeRefuseUnsignedHMACSources(t *testing.T) {
	gw := func(extra string) string {
		dir := t.TempDir()
		return writeConfig(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token = "t"
[store]
path = %q
[[gateway]]
name = "shop"
kind = "hmac"
secret = "s3cret"
header = "X-Sig"
%s
`, filepath.Join(dir, "ipnd.db"), extra))
	}
	for _, tc := range []struct{ name, cfg, want string }{
		{"timestamp", "timestamp = \"header:X-Ts\"\nsigned_content = \"{body}\"\n",
			`gateway[0] ("shop"): invalid gateway config: gateway "shop" (hmac): timestamp = "header:X-Ts" is not covered by the signature (signed_content has no {header:X-Ts} or {ts}): the sender could put a fresh time on a captured request and replay it forever`},
		{"dedup_key", "dedup_key = \"header:X-Event-Id\"\n",
			`dedup_key = "header:X-Event-Id" is not covered by the signature (signed_content has no {header:X-Event-Id}): a replayed request could carry a new message id`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := gw(tc.cfg)
			out, err := runCmd(t, envFunc(), "check", "-config", p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check: %v\n%s\nwant an error containing %q", err, out, tc.want)
			}
			// serve builds the same adapters before it listens: it must
			// return the error, not start (the deadline only bounds a
			// wrong start).
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = run(ctx, []string{"serve", "-config", p}, envFunc(), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) || ctx.Err() != nil {
				t.Errorf("serve: %v (context: %v)\nwant it to refuse to start with %q", err, ctx.Err(), tc.want)
			}
		})
	}
	ok := gw("timestamp = \"header:X-Ts\"\nsigned_content = \"{ts}.{header:X-Event-Id}.{body}\"\ndedup_key = \"header:X-Event-Id\"\n")
	if out, err := runCmd(t, envFunc(), "check", "-config", ok); err != nil {
		t.Errorf("check of the signed variant: %v\n%s", err, out)
	}
}
