#!/usr/bin/env bash
# Make sure promtool is at hand: the tests check deploy/prometheus with it
# (and skip those checks without it). It is taken out of Debian's package
# `prometheus` into .venv/bin, without installing the package, so no
# Prometheus server is set up or started. Does nothing when promtool is
# already there; a failure is not an error.
set -uo pipefail
cd "$(dirname "$0")/.."
if command -v promtool >/dev/null || [ -x .venv/bin/promtool ]; then
  exit 0
fi
echo "fetching promtool (from Debian's prometheus package) for the alert rule tests..." >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else "$@"; fi; }
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1)
fi
deb=$(ls "$work"/prometheus_*.deb 2>/dev/null | head -1)
if [ -n "$deb" ] && dpkg-deb -x "$deb" "$work/x" && [ -x "$work/x/usr/bin/promtool" ] && [ -d .venv/bin ]; then
  cp "$work/x/usr/bin/promtool" .venv/bin/promtool
  .venv/bin/promtool --version 2>&1 | head -1 >&2
else
  echo "could not fetch promtool: the promtool checks will be skipped" >&2
fi
exit 0
