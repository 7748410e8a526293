#!/usr/bin/env bash
# Installs Debian's Chromium, which the report tests render pages in (tests/browser.py drives it through
# Playwright; no browser is downloaded). Does nothing when /usr/bin/chromium is there, or when
# $AUTOSCOUT_CHROMIUM names an executable; else apt-get installs it (through sudo when not root).
set -uo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ -n "${AUTOSCOUT_CHROMIUM:-}" ] && [ -x "${AUTOSCOUT_CHROMIUM}" ]; then
  exit 0
fi

fail() {
  echo "install_browser.sh: $1" >&2
  echo "install_browser.sh: the report tests need Chromium: install the 'chromium' package, or set" \
       "\$AUTOSCOUT_CHROMIUM to a Chromium binary" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "/usr/bin/chromium is missing and there is no apt-get on this machine"
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  fail "/usr/bin/chromium is missing; installing it needs root, and sudo is not available"
fi

echo "install_browser.sh: installing Debian's chromium package (apt-get)" >&2
${as_root[@]+"${as_root[@]}"} apt-get update -qq || fail "apt-get update failed"
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
  || fail "apt-get install chromium failed"
[ -x /usr/bin/chromium ] || fail "apt-get installed chromium, but /usr/bin/chromium is still missing"
