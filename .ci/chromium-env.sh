#!/usr/bin/env bash
# A real browser for the HTML report test (tests/test_report.py): Debian's Chromium,
# driven headless by playwright (the test extra) with executable_path; playwright never
# downloads a browser of its own. Installs the `chromium` package when no Chromium is
# found (needs root: apt-get; about 80 s and ~300 MB). FACEKIT_CHROMIUM names another binary.
# Usage: bash .ci/chromium-env.sh
set -euo pipefail
find_chromium() {
  for c in "${FACEKIT_CHROMIUM:-}" /usr/bin/chromium "$(command -v chromium || true)" "$(command -v chromium-browser || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}
if ! bin=$(find_chromium); then
  if [ "$(id -u)" != 0 ]; then
    echo "chromium-env.sh: no Chromium found and not root: run 'apt-get install -y chromium' as root (or set FACEKIT_CHROMIUM)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  bin=$(find_chromium)
fi
"$bin" --headless --no-sandbox --disable-gpu --version 2>/dev/null | head -1 || true
echo "chromium: $bin"
