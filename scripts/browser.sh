#!/usr/bin/env bash
# Makes sure a headless browser is there for the status-page test (`make test`): Debian's
# chromium, installed when missing and we are root with apt; otherwise says what to do
# (the test then skips itself outside CI, and fails in CI).
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "browser.sh: installing Debian's chromium for the status-page test" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "browser.sh: no chromium found; install it (e.g. apt-get install chromium) to run the status-page test" >&2
