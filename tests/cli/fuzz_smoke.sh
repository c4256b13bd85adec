#!/bin/sh
# fuzz_smoke.sh: command-line test wrapper (make test passes the binary as $1, unused here):
# runs every fuzz target for a few seconds via tests/fuzz/smoke.sh, which skips (exit 0) when
# clang/libFuzzer is missing.
cd "$(dirname "$0")/../.." || exit 1
if ! command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
    echo "skipped: clang/libFuzzer not available"
    exit 0
fi
exec sh tests/fuzz/smoke.sh
