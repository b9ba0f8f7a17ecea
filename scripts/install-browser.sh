#!/bin/sh
# Installs Debian's chromium for the browser tests (tests/test_inspect_browser.py) when it is missing.
# Playwright drives it from Python; its own browser download is not used (no network for that here).
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "install-browser: chromium is missing and this user cannot install it (apt-get install chromium); browser tests will skip" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: no apt-get here; install chromium yourself for the browser tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; } \
  || echo "install-browser: apt-get could not install chromium; browser tests will skip" >&2
exit 0
