#!/usr/bin/env bash
# Makes promtool available for make test (deploy_test.go checks
# deploy/alerts.yml with it). Prints the directory to add to PATH, if any.
#
# Only the promtool binary is installed, into a cache directory
# ($IPND_TOOLS_DIR, default ~/.cache/ipnd/tools): no package is installed,
# no service is installed or enabled; outside that directory only apt's
# package lists may change (apt-get update, as root, when apt-get download
# finds no list to download from). Where apt-get works, Debian's "prometheus" package is
# downloaded (apt-get download: about 6 s; 23 s on a fresh machine, whose
# package lists apt-get update fetches first) and only usr/bin/promtool is
# extracted from it (dpkg-deb -x); otherwise promtool is built with
# go install through the Go module proxy, once: measured 8m45s of CPU
# (36 min on a loaded 2-core machine), a 123 MB binary, and some hundred
# modules downloaded.
# Safe without a terminal (CI=true, no stdin), as root or not.
set -euo pipefail
PROMTOOL_VERSION=v0.316.0 # the Go module version (Prometheus 3.x) for go install
if command -v promtool >/dev/null; then exit 0; fi
cache="${IPND_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/ipnd/tools}"
# A binary cut short by an earlier run that was interrupted does not count.
if [ -x "$cache/promtool" ] && "$cache/promtool" --version >/dev/null 2>&1; then echo "$cache"; exit 0; fi
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
	# _apt (apt's download sandbox) must be able to write here.
	chmod 755 "$work"
	if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
	fetched=0
	if (cd "$work" && apt-get download -qq prometheus) </dev/null >/dev/null 2>&1; then
		fetched=1
	elif [ "$(id -u)" = 0 ] && apt-get update -qq </dev/null >&2 2>&1 &&
		(cd "$work" && apt-get download -qq prometheus) </dev/null >&2 2>&1; then
		# A fresh machine has no package lists yet: updating them installs nothing.
		fetched=1
	fi
	if [ "$fetched" = 1 ]; then
		deb="$(ls "$work"/prometheus_*.deb 2>/dev/null | head -n1)"
		if [ -n "$deb" ] && dpkg-deb -x "$deb" "$work/x" && [ -x "$work/x/usr/bin/promtool" ] &&
			"$work/x/usr/bin/promtool" --version >/dev/null 2>&1; then
			install -m 755 "$work/x/usr/bin/promtool" "$cache/promtool.new"
			mv "$cache/promtool.new" "$cache/promtool"
			echo "$cache"
			exit 0
		fi
	fi
	echo "apt-get download prometheus did not give a working promtool; building it instead" >&2
fi
echo "building promtool $PROMTOOL_VERSION with go install (minutes, once)..." >&2
# Built beside, then renamed in: an interrupted build leaves nothing in $cache.
GOBIN="$work/bin" go install "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" </dev/null >&2
install -m 755 "$work/bin/promtool" "$cache/promtool.new"
mv "$cache/promtool.new" "$cache/promtool"
echo "$cache"
