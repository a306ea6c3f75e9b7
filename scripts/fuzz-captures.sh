#!/usr/bin/env bash
# Builds the libFuzzer target over the file readers (CaptureReader: pcap, our pcapng reader,
# compressed input; the --labels reader) and runs it.
#
#   scripts/fuzz-captures.sh [seconds]    (default 60; also: scripts/fuzz.sh captures [seconds])
#   scripts/fuzz-captures.sh merge        minimise the work corpus into Fuzz/corpus-captures
#
# As scripts/fuzz.sh does for the parser: the Swift modules the readers need are compiled here
# with swiftc as the package's modules, with fuzzer coverage and AddressSanitizer; libpcap is the
# system's, as are zlib, libzstd and liblzma. Inputs: Tests/FuzzRegressionTests/CaptureFuzzInvariants.swift. The work corpus lives
# outside the repo (RG_CAPTURE_FUZZ_WORK, default /tmp/rg-capture-fuzz), seeded from
# Fuzz/corpus-captures (Fuzz/make_capture_seeds.py wrote the first seeds); crashes land in its
# artifacts directory.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${RG_CAPTURE_FUZZ_BUILD:-/tmp/rg-capture-fuzz-build}
work=${RG_CAPTURE_FUZZ_WORK:-/tmp/rg-capture-fuzz}
flags=(-sanitize=fuzzer,address -parse-as-library -O -swift-version 5 -g)
# 4 KiB holds a file header and a few dozen frames or label rows: the readers' every branch.
max_len=4096

mkdir -p "$build" "$work/corpus" "$work/artifacts"

module() {  # name, extra flags..., sources...
    local name=$1; shift
    swiftc "${flags[@]}" -module-name "$name" -I "$build" -emit-module -emit-module-path "$build/$name.swiftmodule" \
        -emit-library -static -o "$build/lib$name.a" "$@"
}
echo "building $build/capture-fuzz"
module PacketParser "$repo"/Sources/PacketParser/*.swift
module VerdictEngine "$repo"/Sources/VerdictEngine/*.swift
module SystemCalls "$repo"/Sources/SystemCalls/*.swift
c_modules=(-I "$repo/Sources/CPcap" -I "$repo/Sources/CZlib" -I "$repo/Sources/CZstd" -I "$repo/Sources/CLzma")
module Captures "${c_modules[@]}" "$repo"/Sources/Captures/*.swift
module Scoring -I "$repo/Sources/CPrefetch" "$repo"/Sources/Scoring/*.swift
swiftc "${flags[@]}" -module-name CaptureFuzz -I "$build" "${c_modules[@]}" -I "$repo/Sources/CPrefetch" \
    "$repo/Fuzz/CaptureFuzz.swift" "$repo/Fuzz/FuzzEntry.swift" "$repo/Tests/FuzzRegressionTests/CaptureFuzzInvariants.swift" \
    "$build/libScoring.a" "$build/libCaptures.a" "$build/libVerdictEngine.a" "$build/libPacketParser.a" "$build/libSystemCalls.a" -lpcap -lz -lzstd -llzma \
    -o "$build/capture-fuzz"

if [[ "${1:-}" == "merge" ]]; then
    fresh=$(mktemp -d /tmp/rg-capture-fuzz-merge.XXXXXX)
    snapshot=$(mktemp -d /tmp/rg-capture-fuzz-snapshot.XXXXXX)
    cp "$work"/corpus/* "$snapshot"/ 2>/dev/null || true
    "$build/capture-fuzz" -set_cover_merge=1 -use_counters=0 -max_len=$max_len "$fresh" "$repo/Fuzz/corpus-captures" "$snapshot"
    rm -rf "$snapshot"
    rm -f "$repo"/Fuzz/corpus-captures/*
    cp "$fresh"/* "$repo/Fuzz/corpus-captures/"
    rm -rf "$fresh"
    echo "Fuzz/corpus-captures: $(ls "$repo/Fuzz/corpus-captures" | wc -l) files, $(du -sb "$repo/Fuzz/corpus-captures" | cut -f1) bytes"
    exit 0
fi

seconds=${1:-60}
cp -n "$repo"/Fuzz/corpus-captures/* "$work/corpus/" 2>/dev/null || true
echo "fuzzing for ${seconds}s, corpus $work/corpus ($(ls "$work/corpus" | wc -l) inputs)"
set +e
"$build/capture-fuzz" "$work/corpus" -max_total_time="$seconds" -max_len=$max_len \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" -timeout=10 -rss_limit_mb=2048
rc=$?
set -e
rm -f /dev/shm/rg-capture-fuzz-*.bin
echo "exit $rc; corpus now $(ls "$work/corpus" | wc -l) inputs; findings in $work/artifacts: $(ls "$work/artifacts" | wc -l)"
ls -l "$work/artifacts"
exit $rc
