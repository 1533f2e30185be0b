#!/usr/bin/env bash
# Make sure axe-core (the accessibility engine the browser tests inject into
# the real pages) is installed: the exact version pinned in
# tests/browser/package.json and package-lock.json (with its checksum), from
# the npm registry, into tests/browser/node_modules (ignored by git, never
# committed). Installs npm from Debian when it is missing. Does nothing when
# the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/../tests/browser"
wanted=$(sed -n 's/.*"axe-core": *"\([^"]*\)".*/\1/p' package.json | head -1)
installed=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' node_modules/axe-core/package.json 2>/dev/null | head -1 || true)
if [ -n "$wanted" ] && [ "$installed" = "$wanted" ] && [ -f node_modules/axe-core/axe.min.js ]; then
  exit 0
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
if ! command -v npm >/dev/null; then
  echo "installing npm (for axe-core, the browser tests' accessibility audit)..." >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi
echo "installing axe-core $wanted into tests/browser/node_modules..." >&2
# ci: exactly what package-lock.json says, checksum verified; no scripts run.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
