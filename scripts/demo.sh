#!/usr/bin/env bash
# The main job on an embedded default, with no arguments: generate a mixed scenario (legit traffic,
# a SYN-ACK carpet bombing, a spoofed RST flood and blind resets on long-lived BGP and SSH
# sessions), score it against the protected networks the lab uses, print the text report and write
# the HTML report. The defaults are the operator's, plus the one line a site with BGP and SSH
# sessions to guard adds: -D track_full_ports={ 22, 179 } (only those flows are queued whole).
# The report shows the RST attacks the engine saw, the flood cut to its baseline, the blind resets
# dropped (rst-out-of-window, rst-inexact) and every legit frame, resets included, passed.
#
#   scripts/demo.sh            # everything under ${DEMO_DIR:-/tmp/reflectguard-demo}
#   REFLECTGUARD_BIN=... scripts/demo.sh   # use a given binary instead of the release build
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${DEMO_DIR:-/tmp/reflectguard-demo}"
mkdir -p "$out"

# A fresh machine first gets the libraries and tools (idempotent; installs only what is missing).
"$repo/scripts/setup.sh" >&2

# Build (incremental: quick when up to date) unless a binary is given.
if [[ -n "${REFLECTGUARD_BIN:-}" ]]; then
    bin="$REFLECTGUARD_BIN"
else
    echo "demo: swift build -c release --product reflectguard" >&2
    (cd "$repo" && swift build -c release --product reflectguard 2>&1 | tail -n 1 >&2)
    bin="$repo/.build/release/reflectguard"
fi

protect=(--protect 198.18.2.0/24 --protect 2001:db8:2::/64 -D "track_full_ports={ 22, 179 }")
capture="$out/mixed.pcap"
labels="$out/mixed.labels.csv"

"$bin" lab gen --scenario mixed --out "$capture" --labels "$labels" --seed 1 >&2
echo "demo: generated $capture (labels in $labels)" >&2
label_args=(--labels "$labels")

"$bin" score "$capture" "${protect[@]}" "${label_args[@]}" \
    --verdicts "$out/verdicts.csv" --sessions "$out/sessions.csv"
"$bin" score "$capture" "${protect[@]}" "${label_args[@]}" --format html --output "$out/report.html"
"$bin" score "$capture" "${protect[@]}" "${label_args[@]}" --format json --output "$out/report.json"
echo >&2
echo "demo: HTML report  $out/report.html" >&2
echo "demo: JSON report  $out/report.json" >&2
echo "demo: per-frame verdicts $out/verdicts.csv, sessions $out/sessions.csv" >&2

# The inline case needs root (network namespaces); say how to see it otherwise.
if [[ $(id -u) -eq 0 && "${DEMO_INLINE:-1}" == 1 ]]; then
    echo >&2
    echo "demo: the inline case, in a namespace lab (scripts/demo-inline.sh)" >&2
    "$repo/scripts/demo-inline.sh" "$bin"
else
    echo "demo: run as root to see the inline case too (scripts/demo-inline.sh)" >&2
fi
