#!/usr/bin/env bash
# Installs Chromium from the Debian packages for the review.html browser test (tests/test_review_gallery.py).
# Idempotent and quiet: does nothing when a Chromium is already on PATH. Browser downloads at test
# time (playwright, puppeteer) fail in CI, so the system package is used.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
