#!/usr/bin/env bash
# Make sure Debian's Chromium is installed: the browser tests (tests/browser)
# drive it through Playwright, which cannot download a browser of its own here.
# Does nothing when it is already there.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
echo "installing Chromium for the browser tests..." >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
"$CHROMIUM" --version >&2
