#!/usr/bin/env bash
# The whole test suite under a sanitizer: scripts/sanitize.sh [address|thread|all] (default all).
# Builds in /tmp/rg-san-<sanitizer> (debug, tests included), runs every test with the sanitized
# reflectguard binary as REFLECTGUARD_BIN (so the agents and score runs the integration tests
# start are sanitized too; ASan reports of child processes go to files, see below), then scores
# a generated 200k-frame capture with --threads 2. Root for the network-namespace tests, like
# scripts/test.sh. Exit status: non-zero if a test failed or a sanitizer reported anything.
# Leaks inside the toolchain's own libraries are suppressed by name: Fuzz/lsan-toolchain.supp.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
which=${1:-all}
case $which in address|thread) sanitizers=("$which") ;; all) sanitizers=(address thread) ;;
    *) echo "Usage: scripts/sanitize.sh [address|thread|all]" >&2; exit 2 ;; esac

status=0
for s in "${sanitizers[@]}"; do
    scratch=/tmp/rg-san-$s
    reports=$(mktemp -d /tmp/rg-san-reports.XXXXXX)
    echo "sanitize: $s: swift build --scratch-path $scratch --build-tests --sanitize=$s"
    swift build --scratch-path "$scratch" --build-tests --sanitize="$s"
    bin=$scratch/debug/reflectguard
    echo "sanitize: $s: swift test (REFLECTGUARD_BIN=$bin; child reports in $reports)"
    if ! ASAN_OPTIONS=log_path=$reports/asan TSAN_OPTIONS=log_path=$reports/tsan \
        LSAN_OPTIONS=suppressions=$repo/Fuzz/lsan-toolchain.supp REFLECTGUARD_BIN=$bin \
        swift test --scratch-path "$scratch" --skip-build --sanitize="$s"; then
        echo "sanitize: $s: FAIL: tests failed" >&2; status=1
    fi
    cap=$reports/mixed.pcap
    "$bin" lab gen --scenario mixed --packets 200000 --seed 1 --out "$cap" >/dev/null
    ASAN_OPTIONS=log_path=$reports/asan TSAN_OPTIONS=log_path=$reports/tsan \
        LSAN_OPTIONS=suppressions=$repo/Fuzz/lsan-toolchain.supp \
        "$bin" score "$cap" --protect 198.18.2.0/24 --protect 2001:db8:2::/64 --threads 2 --format json >/dev/null \
        || { echo "sanitize: $s: FAIL: score --threads 2 failed" >&2; status=1; }
    # A report file is written for suppressed leaks too ("Suppressions used"); anything else is a finding.
    if grep -lE "ERROR: |WARNING: ThreadSanitizer" "$reports"/asan.* "$reports"/tsan.* 2>/dev/null; then
        echo "sanitize: $s: FAIL: sanitizer reports above (in $reports)" >&2; status=1
    else
        echo "sanitize: $s: no sanitizer report (report files: $(ls "$reports" | grep -c '^[at]san\.' || true), each listing suppressed toolchain leaks only)"
    fi
done
exit $status
