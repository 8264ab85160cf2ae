# ipnd — build, test, bench, fuzz, lint. Needs only Go (1.26+); lint
# fetches staticcheck through the Go module proxy.
GO          ?= go
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
FUZZTIME    ?= 10s
BENCHSECS   ?= 3
E2E_N       ?= 60000
E2E_PREFILL ?= 5000000
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Every fuzz target as package:Name.
FUZZ_TARGETS = \
	./fulfil:FuzzVerifyKey \
	./public:FuzzParseLicenseRequest \
	./ipn/gateway:FuzzParseStripeSignature \
	./store:FuzzOrderCursor \
	./ipn/gateway:FuzzParseWebhookSignatures \
	./ipn/gateway:FuzzNormalize \
	./ipn:FuzzAmount \
	./ipn/gateway:FuzzPayPalForm \
	./ipn/gateway:FuzzCoinPaymentsForm \
	./ipn/gateway:FuzzNowPaymentsCanonical \
	./ipn/gateway:FuzzParseBTCPaySig \
	./ipn/gateway:FuzzCryptoNormalize \
	./ipn/gateway:FuzzHMACHeader \
	./ipn:FuzzApply \
	./ipn:FuzzTally \
	./store:FuzzDecodeRecord \
	./store:FuzzPack \
	./store:FuzzJournal \
	./store:FuzzOutboxState

.PHONY: all build run test race bench bench-delivery fuzz lint clean

all: lint test build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o ipnd .

run:
	$(GO) run . serve

# The test command of the README and of CI: vet, then every test with the
# race detector (including the kill -9 and end-to-end tests). promtool
# (for deploy/alerts.yml) is fetched first when missing: the binary alone,
# into ~/.cache/ipnd/tools (no package, no service; scripts/install-promtool.sh).
#
# The dashboard's browser tests (TestDashboardBrowser*) drive Debian's
# chromium; make test installs no browser: without one (and outside CI)
# it leaves them out and says so, first and last. .ci/run installs
# chromium, so CI always runs them; with CI=true and no chromium they fail.
# The PostgreSQL tests (TestPG*) start a throwaway server (initdb, pg_ctl)
# from Debian's postgresql package in a temp dir; likewise left out with a
# NOTE when it is missing, and installed by .ci/run.
#
# With those binaries, the root package's end-to-end tests then run a
# second time on PostgreSQL (IPND_TEST_BACKEND=postgres: every test's
# ipnd on a database of its own on one shared throwaway cluster), with
# the same flags. The tests of bbolt's own files (its journal, damaged
# pages, a full disk, backup/restore/recover of the file) say so with
# bboltOnly and are left out of that pass: the last NOTE counts them and
# names each with why. TestPG* ran in the first pass already.
test:
	$(GO) vet ./...
	@skip=; note=; pg=yes; \
	if [ -z "$${IPND_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && [ "$${CI:-}" != true ]; then \
		note="NOTE: the dashboard browser tests (TestDashboardBrowser*) were NOT run: no chromium here (apt-get install chromium, or set IPND_CHROMIUM); .ci/run installs it and runs them"; \
		echo "$$note"; skip="^TestDashboardBrowser"; \
	fi; \
	if [ -z "$${IPND_PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null && [ "$${CI:-}" != true ]; then \
		n="NOTE: the PostgreSQL tests (TestPG*) and the second pass of the end-to-end tests on PostgreSQL were NOT run: no PostgreSQL server binaries here (apt-get install postgresql, or set IPND_PG_BIN); .ci/run installs them and runs them"; \
		echo "$$n"; note="$${note:+$$note\\n}$$n"; skip="$${skip:+$$skip|}^TestPG"; pg=; \
	fi; \
	extra=$$(./scripts/install-promtool.sh) && PATH="$${extra:+$$extra:}$$PATH" && export PATH && \
		promtool --version 2>&1 | sed -n 1p && \
		$(GO) test -race -count=1 -timeout 20m $${skip:+-skip "$$skip"} ./...; rc=$$?; \
	if [ -n "$$pg" ]; then \
		echo "== the end-to-end tests (package ipnd) again, on PostgreSQL"; \
		left=$$(mktemp); \
		IPND_TEST_BACKEND=postgres IPND_TEST_BBOLT_ONLY=$$left $(GO) test -race -count=1 -timeout 30m -skip "^TestPG$${skip:+|$$skip}" . || rc=1; \
		n="NOTE: $$(sort -u $$left | wc -l) end-to-end tests are bbolt-only and were NOT run on PostgreSQL:$$(sort -u $$left | sed 's/^/\\n  /' | tr -d '\n')"; \
		rm -f $$left; note="$${note:+$$note\\n}$$n"; \
	fi; \
	if [ -n "$$note" ]; then printf "%b\n" "$$note"; fi; exit $$rc

# BenchmarkE2E (issue 23) posts E2E_N payments (at least 50,000 for the
# issue's figures) and prints the stage table, then again on a store grown
# by E2E_PREFILL processed payments (about 20 minutes and 5 GB of disk for
# 5,000,000 on a 2-CPU VM; E2E_PREFILL=0 leaves it out). BenchmarkE2E and
# BenchmarkIngest measure PostgreSQL too in the same run (a throwaway
# cluster, internal/pgtest); without server binaries they print a NOTE
# that the postgres half was not measured.
bench:
	IPND_E2E_N=$(E2E_N) IPND_E2E_PREFILL=$(E2E_PREFILL) IPND_BENCH_SECONDS=$(BENCHSECS) $(GO) test -run '^$$' -bench 'BenchmarkE2E|BenchmarkIngest|BenchmarkPayPal|BenchmarkOutbox|BenchmarkTLS|BenchmarkFulfil|BenchmarkDashboard' -benchtime 1x -timeout 90m .
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./store ./ipn ./notify

# The delivery tables the defaults of email.connections, email.unrecorded
# and shop.connections were chosen from (SMTP server at 0 and 20 ms a
# message; a backlog, so that ingest does not set the pace). Minutes.
bench-delivery:
	$(GO) test -run '^$$' -bench 'BenchmarkEmailConnections|BenchmarkShopConnections' -benchtime 1x -timeout 60m .

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -f ipnd
