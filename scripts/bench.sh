#!/usr/bin/env bash
# Benchmarks (release build only: debug figures mean nothing).
#   scripts/bench.sh parser   SIMD fast path vs scalar reference parser, Mpps per core
#   scripts/bench.sh engine   parse + verdict Mpps per core, bytes per tracked SYN, RSS with 1M SYNs
#   scripts/bench.sh all      every benchmark
# Set SCRATCH to build elsewhere than .build (e.g. SCRATCH=/tmp/rg-me).
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=(); bin=.build/release
if [[ -n "${SCRATCH:-}" ]]; then scratch=(--scratch-path "$SCRATCH"); bin="$SCRATCH/release"; fi

build() {
    echo "bench: building release (swift build -c release --product reflectguard-bench)"
    swift build -c release "${scratch[@]}" --product reflectguard-bench
}

machine() {
    echo "bench: $(date -u '+%Y-%m-%d %H:%M UTC'); $(uname -srm); $(lscpu | sed -n 's/^Model name: *//p'); load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# The fast path relies on vector compares in its SIMD-specialised functions (FastPath.parse and
# whatever the compiler specialised for SIMDClassifier); Swift silently falls back to scalar loops
# for some SIMD spellings (STYLE.md), so check the binary itself, and that no lane is spilled to
# the stack and masked one byte at a time (the pattern 6.3 produced for a 16-lane AND).
check_parser_simd() {
    command -v objdump >/dev/null || { echo "bench: objdump missing (apt-get install binutils); SIMD check skipped"; return 0; }
    local asm
    asm=$(objdump -d --no-show-raw-insn "$bin/reflectguard-bench" | awk '
        /^[0-9a-f]+ <.*>:$/ { f = ($2 ~ /8FastPathO5parse_5count/ || ($2 ~ /8FastPath/ && $2 ~ /SIMDClassifier/)) ; next }
        /^$/ { f = 0 }
        f')
    local ok=1
    for insn in pand pcmpeqb pmovmskb; do
        local n; n=$(grep -cw "$insn" <<<"$asm" || true)
        echo "bench: SIMD fast path has $n x $insn"
        [[ $n -gt 0 ]] || ok=0
    done
    [[ $ok == 1 ]] || { echo "bench: FAIL: the SIMD fast path was compiled without vector compares" >&2; exit 1; }
}

parser() {
    check_parser_simd
    "$bin/reflectguard-bench" parser
}

# The engine's table probes rely on one pcmpeqb + pmovmskb per tag group (inlined into the
# decision functions).
check_engine_simd() {
    command -v objdump >/dev/null || { echo "bench: objdump missing (apt-get install binutils); SIMD check skipped"; return 0; }
    local dis ok=1 n
    dis=$(objdump -d --no-show-raw-insn "$bin/reflectguard-bench")
    for insn in pcmpeqb pmovmskb; do
        n=$(awk '/^[0-9a-f]+ <\$s13VerdictEngine0B0C(13inboundSynack|11outboundSyn)/ {f=1; next} /^$/ {f=0} f' <<<"$dis" | grep -c "$insn" || true)
        echo "bench: Engine SYN/SYN-ACK paths have $n x $insn"
        [[ $n -gt 0 ]] || ok=0
    done
    [[ $ok == 1 ]] || { echo "bench: FAIL: the engine's table probes lost their vector compares" >&2; exit 1; }
}

engine() {
    check_engine_simd
    "$bin/reflectguard-bench" engine
}

case "${1:-all}" in
    parser) build; machine; parser ;;
    engine) build; machine; engine ;;
    all)    build; machine; parser; engine ;;
    *) echo "Usage: scripts/bench.sh parser|engine|all" >&2; exit 2 ;;
esac
