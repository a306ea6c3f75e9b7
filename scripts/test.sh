#!/usr/bin/env bash
# The one test command: installs what is missing, builds (release, which must be warning-free,
# and debug for the tests), then runs every test, network-namespace tests included.
# In CI (CI=true) a test that would skip for lack of root or a tool fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "test: release build"
log=$(mktemp)
swift build -c release 2>&1 | tee "$log" | grep -E "error|warning|Compiling|Build" || true
if grep -q "warning:" "$log"; then
  echo "test: the release build has warnings (see above)" >&2
  exit 1
fi
grep -q "Build complete" "$log" || { echo "test: release build failed" >&2; exit 1; }
rm -f "$log"

export REFLECTGUARD_BIN="$PWD/.build/release/reflectguard"
export REFLECTGUARD_SHARED="${REFLECTGUARD_SHARED:-$(cd .. && pwd)/shared}"

echo "test: swift test"
swift test "$@"
