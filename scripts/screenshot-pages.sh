#!/usr/bin/env bash
# Screenshots of the pages people read, in headless Chromium (Debian's package), to look at:
#   bash scripts/screenshot-pages.sh OUT [REPORT.html]
# OUT/report.png: the benchmark report (default docs/results/bench-quick/report.html);
# OUT/api.png: the API reference's front page (built into OUT/api first).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: screenshot-pages.sh OUT [REPORT.html]}
report=${2:-docs/results/bench-quick/report.html}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "no Chromium: apt-get install chromium" >&2; exit 2; }
mkdir -p "$out"
.venv/bin/python scripts/build-api-docs.py "$out/api" >/dev/null
shoot() {  # page, png, height
  "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
    --window-size=1280,"$3" --screenshot="$2" "file://$(realpath "$1")" 2>/dev/null
}
shoot "$report" "$out/report.png" 2400
shoot "$out/api/medveil.html" "$out/api.png" 1000
echo "$out/report.png $out/api.png"
