#!/usr/bin/env bash
# The main job on an embedded default, with no arguments: generate a mixed scenario (legit traffic,
# a SYN-ACK carpet bombing and a RST flood), score it against the protected networks the lab uses,
# print the text report and write the HTML report.
#
#   scripts/demo.sh            # everything under ${DEMO_DIR:-/tmp/reflectguard-demo}
#   REFLECTGUARD_BIN=... scripts/demo.sh   # use a given binary instead of the release build
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${DEMO_DIR:-/tmp/reflectguard-demo}"
mkdir -p "$out"

bin="${REFLECTGUARD_BIN:-$repo/.build/release/reflectguard}"
if [[ ! -x "$bin" ]]; then
    echo "demo: building the release binary (swift build -c release) ..." >&2
    (cd "$repo" && swift build -c release --product reflectguard >&2)
fi

protect=(--protect 198.18.2.0/24 --protect 2001:db8:2::/64)
capture="$out/mixed.pcap"
labels="$out/mixed.labels.csv"

# The scenario generator writes a deterministic capture per seed. Until a binary has it, score a
# real capture from the shared set instead, so the demo works at every commit.
label_args=()
if "$bin" lab gen --scenario mixed --out "$capture" --labels "$labels" --seed 1 >&2 2>"$out/lab.err"; then
    label_args=(--labels "$labels")
    echo "demo: generated $capture (labels in $labels)" >&2
else
    shared="${REFLECTGUARD_SHARED:-$repo/../shared}"
    fallback="$shared/captures/evilfingers_nmap_syn_scan.pcap"
    if [[ ! -r "$fallback" ]]; then
        echo "demo: 'lab gen' failed ($(head -n1 "$out/lab.err")) and $fallback is missing" >&2
        exit 1
    fi
    echo "demo: 'lab gen' is not available ($(head -n1 "$out/lab.err")); scoring $fallback instead" >&2
    capture="$fallback"
    # The nmap scan's target network stands in for the protected one.
    protect+=(--protect 192.168.1.0/24)
fi

"$bin" score "$capture" "${protect[@]}" "${label_args[@]}" \
    --verdicts "$out/verdicts.csv" --sessions "$out/sessions.csv"
"$bin" score "$capture" "${protect[@]}" "${label_args[@]}" --format html --output "$out/report.html"
"$bin" score "$capture" "${protect[@]}" "${label_args[@]}" --format json --output "$out/report.json"
echo >&2
echo "demo: HTML report  $out/report.html" >&2
echo "demo: JSON report  $out/report.json" >&2
echo "demo: per-frame verdicts $out/verdicts.csv, sessions $out/sessions.csv" >&2
