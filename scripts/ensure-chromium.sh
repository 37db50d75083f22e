#!/usr/bin/env bash
# Debian's headless Chromium and its ChromeDriver, for the dashboard browser tests (tests/browser.rs).
# Installs only when missing.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
echo "ensure-chromium: installing chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
