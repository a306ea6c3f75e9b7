#!/usr/bin/env bash
# Renders an HTML report with headless Chromium to a PNG, so a person can look at what a browser
# really shows (SVG sizing, overflow, fonts).
#
#   scripts/render-report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
set -euo pipefail
html="${1:?usage: render-report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]}"
png="${2:-${html%.html}.png}"
size="${3:-1200x900}"
[[ -r "$html" ]] || { echo "render-report: cannot read $html" >&2; exit 1; }
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [[ -z "$browser" ]]; then
    echo "render-report: no chromium; install it with: apt-get install -y chromium" >&2
    exit 1
fi
abs="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
# --no-sandbox: the lab machines run as root, where Chromium's sandbox refuses to start.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --screenshot="$png" --window-size="${size/x/,}" "file://$abs" >/dev/null 2>&1
[[ -s "$png" ]] || { echo "render-report: chromium wrote no $png" >&2; exit 1; }
echo "$png"
