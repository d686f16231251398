#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser test (tests/test_report_browser.py) when it is missing.
# Never fails the caller: when it cannot install, it says why and exits 0; the test then skips with that reason.
command -v chromium >/dev/null 2>&1 && exit 0
why=""
if ! command -v apt-get >/dev/null 2>&1; then why="no apt-get on this machine (not Debian/Ubuntu)"
elif [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then why="apt-get needs root and sudo is not available without a password"
else
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  echo "installing chromium for the HTML report's browser test (apt-get update && apt-get install -y chromium)"
  if ! $SUDO apt-get update -qq >/tmp/astlab-chromium-install.log 2>&1; then why="apt-get update failed (see /tmp/astlab-chromium-install.log)"
  elif ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >>/tmp/astlab-chromium-install.log 2>&1; then
    why="apt-get install -y chromium failed (see /tmp/astlab-chromium-install.log)"
  fi
fi
command -v chromium >/dev/null 2>&1 && { echo "chromium installed: $(chromium --version 2>/dev/null)"; exit 0; }
echo "chromium not installed: ${why:-unknown reason}; the browser test of the HTML report will be skipped"
exit 0
