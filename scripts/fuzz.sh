#!/usr/bin/env bash
# Builds the libFuzzer target over PacketParser + VerdictEngine and runs it.
#
#   scripts/fuzz.sh [seconds]        (default 60)
#   scripts/fuzz.sh rules [seconds]  the rules scanner and resolver instead
#   scripts/fuzz.sh conntrack [seconds]  the ctnetlink message reader instead
#   scripts/fuzz.sh captures [...]   the file readers' fuzzer: scripts/fuzz-captures.sh
#
# The package's `swift build` does not take -sanitize=fuzzer, so the two pure-Swift modules are
# compiled here with swiftc, as the same two modules the package has (the engine's
# `import PacketParser` resolves to the real parser), with fuzzer coverage and AddressSanitizer.
# The work corpus lives outside the repo (RG_FUZZ_WORK, default /tmp/rg-fuzz-corpus), seeded from
# Fuzz/corpus; crashes land in $RG_FUZZ_WORK/artifacts. To refresh the committed corpus after a
# run, minimise into it: scripts/fuzz.sh merge. scripts/fuzz.sh reasons [DIR] prints which
# verdict reasons a corpus reaches.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${RG_FUZZ_BUILD:-/tmp/rg-fuzz-build}
work=${RG_FUZZ_WORK:-/tmp/rg-fuzz-corpus}
flags=(-sanitize=fuzzer,address -parse-as-library -O -swift-version 5 -g)

# The file readers' fuzzer is its own script (its own modules, corpus and input format).
if [[ "${1:-}" == "captures" ]]; then exec "$repo/scripts/fuzz-captures.sh" "${@:2}"; fi

mkdir -p "$build" "$work/corpus" "$work/artifacts"

build_modules() {
    # Each module gets coverage; only the final link pulls in libFuzzer's main.
    swiftc "${flags[@]}" -module-name PacketParser -emit-module -emit-module-path "$build/PacketParser.swiftmodule" \
        -emit-library -static -o "$build/libPacketParser.a" "$repo"/Sources/PacketParser/*.swift
    swiftc "${flags[@]}" -module-name VerdictEngine -I "$build" -emit-module \
        -emit-module-path "$build/VerdictEngine.swiftmodule" \
        -emit-library -static -o "$build/libVerdictEngine.a" "$repo"/Sources/VerdictEngine/*.swift
}

build_fuzzer() {
    build_modules
    swiftc "${flags[@]}" -module-name ParserEngineFuzz -I "$build" \
        "$repo/Fuzz/ParserEngineFuzz.swift" "$repo/Fuzz/FuzzEntry.swift" "$repo/Tests/FuzzRegressionTests/FuzzInvariants.swift" \
        "$build/libVerdictEngine.a" "$build/libPacketParser.a" -o "$build/parser-engine-fuzz"
}

# The rules and conntrack targets, once built: fuzz_target NAME CORPUS MAX_LEN SECONDS|merge runs
# $build/NAME-fuzz on its work corpus $work/NAME (seeded from Fuzz/CORPUS) for SECONDS, or
# minimises that work corpus and Fuzz/CORPUS into a fresh Fuzz/CORPUS. Exits with the fuzzer.
fuzz_target() {
    local name=$1 corpus=$repo/Fuzz/$2 max_len=$3 arg=$4
    local twork=$work/$name
    mkdir -p "$twork/corpus" "$twork/artifacts"
    if [[ "$arg" == "merge" ]]; then
        local fresh snapshot
        fresh=$(mktemp -d /tmp/rg-fuzz-merge.XXXXXX)
        # A snapshot: a fuzzer still running on the work corpus deletes inputs it reduced.
        snapshot=$(mktemp -d /tmp/rg-fuzz-snapshot.XXXXXX)
        cp "$twork"/corpus/* "$snapshot"/ 2>/dev/null || true
        "$build/$name-fuzz" -set_cover_merge=1 -use_counters=0 -max_len="$max_len" "$fresh" "$corpus" "$snapshot"
        rm -rf "$snapshot"
        rm -f "$corpus"/*
        cp "$fresh"/* "$corpus/"
        rm -rf "$fresh"
        echo "Fuzz/$2: $(ls "$corpus" | wc -l) files"
        exit 0
    fi
    cp -n "$corpus"/* "$twork/corpus/" 2>/dev/null || true
    set +e
    "$build/$name-fuzz" "$twork/corpus" -max_total_time="$arg" -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="$twork/artifacts/" -timeout=10 -rss_limit_mb=2048
    local rc=$?
    echo "exit $rc; corpus now $(ls "$twork/corpus" | wc -l) inputs; findings in $twork/artifacts: $(ls "$twork/artifacts" | wc -l)"
    exit $rc
}

if [[ "${1:-}" == "rules" ]]; then
    # The rules scanner and resolver: scripts/fuzz.sh rules [seconds|merge], corpus Fuzz/corpus-rules
    # (inputs are rules files; checks in Tests/FuzzRegressionTests/RulesFuzzInvariants.swift).
    build_modules
    swiftc "${flags[@]}" -module-name SystemCalls -emit-module -emit-module-path "$build/SystemCalls.swiftmodule" \
        -emit-library -static -o "$build/libSystemCalls.a" "$repo"/Sources/SystemCalls/*.swift
    swiftc "${flags[@]}" -module-name Rules -I "$build" -emit-module -emit-module-path "$build/Rules.swiftmodule" \
        -emit-library -static -o "$build/libRules.a" "$repo"/Sources/Rules/*.swift
    swiftc "${flags[@]}" -module-name RulesFuzz -I "$build" \
        "$repo/Fuzz/RulesFuzz.swift" "$repo/Fuzz/FuzzEntry.swift" "$repo/Tests/FuzzRegressionTests/RulesFuzzInvariants.swift" \
        "$build/libRules.a" "$build/libSystemCalls.a" "$build/libVerdictEngine.a" "$build/libPacketParser.a" -o "$build/rules-fuzz"
    # -max_len 16384: the embedded ruleset (12 KiB) fits whole.
    fuzz_target rules corpus-rules 16384 "${2:-60}"
fi

if [[ "${1:-}" == "conntrack" ]]; then
    # The ctnetlink message reader: scripts/fuzz.sh conntrack [seconds|merge], corpus
    # Fuzz/corpus-conntrack (inputs are one receive's bytes; checks in
    # Tests/FuzzRegressionTests/ConntrackFuzzInvariants.swift). Seeds from the kernel:
    # `unshare -n Fuzz/make_conntrack_seeds.py DIR`, then copy DIR into the work corpus.
    build_modules
    swiftc "${flags[@]}" -module-name Conntrack -I "$build" -emit-module -emit-module-path "$build/Conntrack.swiftmodule" \
        -emit-library -static -o "$build/libConntrack.a" "$repo/Sources/Conntrack/ConntrackMessage.swift"
    swiftc "${flags[@]}" -module-name ConntrackFuzz -I "$build" \
        "$repo/Fuzz/ConntrackFuzz.swift" "$repo/Fuzz/FuzzEntry.swift" "$repo/Tests/FuzzRegressionTests/ConntrackFuzzInvariants.swift" \
        "$build/libConntrack.a" "$build/libVerdictEngine.a" "$build/libPacketParser.a" -o "$build/conntrack-fuzz"
    # -max_len 4096: a page of dump replies (a dozen entries) fits.
    fuzz_target conntrack corpus-conntrack 4096 "${2:-60}"
fi

if [[ "${1:-}" == "reasons" ]]; then
    # Which verdict reasons the inputs of a directory reach (default: the committed corpus).
    build_fuzzer
    swiftc "${flags[@]}" -module-name ReasonTally -I "$build" \
        "$repo/Fuzz/ReasonTally.swift" "$repo/Tests/FuzzRegressionTests/FuzzInvariants.swift" \
        "$build/libVerdictEngine.a" "$build/libPacketParser.a" -o "$build/reason-tally"
    "$build/reason-tally" -runs=0 -max_len=512 "${2:-$repo/Fuzz/corpus}" 2>/dev/null
    exit 0
fi

echo "building $build/parser-engine-fuzz"
build_fuzzer

if [[ "${1:-}" == "merge" ]]; then
    # Minimise the work corpus plus the committed one into a fresh committed corpus.
    fresh=$(mktemp -d /tmp/rg-fuzz-merge.XXXXXX)
    # A snapshot: a fuzzer still running on the work corpus deletes inputs it reduced.
    snapshot=$(mktemp -d /tmp/rg-fuzz-snapshot.XXXXXX)
    cp "$work"/corpus/* "$snapshot"/ 2>/dev/null || true
    # Edges only (no hit-count buckets), set cover: ~100 files keep every edge the run reached
    # (-merge=1 over all features kept 417 here, too many to commit).
    "$build/parser-engine-fuzz" -set_cover_merge=1 -use_counters=0 -max_len=512 "$fresh" "$repo/Fuzz/corpus" "$snapshot"
    rm -rf "$snapshot"
    rm -f "$repo"/Fuzz/corpus/*
    cp "$fresh"/* "$repo/Fuzz/corpus/"
    rm -rf "$fresh"
    echo "Fuzz/corpus: $(ls "$repo/Fuzz/corpus" | wc -l) files, $(du -sb "$repo/Fuzz/corpus" | cut -f1) bytes"
    exit 0
fi

seconds=${1:-60}
cp -n "$repo"/Fuzz/corpus/* "$work/corpus/" 2>/dev/null || true
echo "fuzzing for ${seconds}s, corpus $work/corpus ($(ls "$work/corpus" | wc -l) inputs)"
set +e
# One in-process run (no -jobs: that forks a worker that logs into ./fuzz-0.log); 2 shared cores.
"$build/parser-engine-fuzz" "$work/corpus" -max_total_time="$seconds" -max_len=512 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" -timeout=10 -rss_limit_mb=2048
rc=$?
set -e
crashes=$(ls "$work/artifacts" | wc -l)
echo "exit $rc; corpus now $(ls "$work/corpus" | wc -l) inputs; findings in $work/artifacts: $crashes"
ls -l "$work/artifacts"
exit $rc
