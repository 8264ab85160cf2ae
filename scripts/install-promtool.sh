#!/usr/bin/env bash
# Makes promtool available for make test (deploy_test.go checks
# deploy/alerts.yml with it). Prints the directory to add to PATH, if any.
# Debian's "prometheus" package ships /usr/bin/promtool and installs in
# about 15 s; building it with go install takes about 11 min from cold
# caches, so that is only the fallback (no apt, or not root).
set -euo pipefail
PROMTOOL_VERSION=v0.316.0 # the Go module version (Prometheus 3.x)
if command -v promtool >/dev/null; then exit 0; fi
gobin="$(go env GOPATH)/bin"
if [ -x "$gobin/promtool" ]; then echo "$gobin"; exit 0; fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
	# A policy-rc.d that says no keeps the package's prometheus server from
	# being started on a machine that runs systemd: only promtool is wanted.
	policy=/usr/sbin/policy-rc.d
	if [ -e "$policy" ]; then policy=; else printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"; fi
	status=0
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >&2 || status=$?
	if [ -n "$policy" ]; then rm -f "$policy"; fi
	if [ "$status" = 0 ] && command -v promtool >/dev/null; then exit 0; fi
fi
echo "installing promtool with go install (about 10 minutes, once)..." >&2
go install "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" >&2
echo "$gobin"
