#!/bin/sh
# smoke.sh: builds every fuzz target (tests/fuzz/fuzz_*.c) and runs each for a few seconds
# (FUZZ_SECONDS, default 3) through tests/fuzz/Makefile; exits non-zero on any crash, leak or
# sanitizer report. Prints "skipped: ..." and exits 0 when clang/libFuzzer is not available.
cd "$(dirname "$0")/../.." || exit 1
CC_FUZZ=${FUZZ_CC:-clang}
if ! command -v "$CC_FUZZ" >/dev/null 2>&1; then
    echo "skipped: clang/libFuzzer not available ($CC_FUZZ not found)"
    exit 0
fi
probe=$(mktemp -d "${TMPDIR:-/tmp}/md-fuzz-probe.XXXXXX") || exit 1
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
    >"$probe/p.c"
if ! "$CC_FUZZ" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
    rm -rf "$probe"
    echo "skipped: clang/libFuzzer not available ($CC_FUZZ cannot link -fsanitize=fuzzer; install libclang-rt-dev)"
    exit 0
fi
rm -rf "$probe"
# build quietly (the log goes to build-fuzz/build.log), then run with one line per target
mkdir -p build-fuzz
if ! make -s -f tests/fuzz/Makefile FUZZ_CC="$CC_FUZZ" -j"${JOBS:-2}" build >build-fuzz/build.log 2>&1; then
    tail -n 30 build-fuzz/build.log
    echo "fuzz smoke: build FAILED (see build-fuzz/build.log)"
    exit 1
fi
make -s -f tests/fuzz/Makefile FUZZ_CC="$CC_FUZZ" FUZZ_SECONDS="${FUZZ_SECONDS:-3}" run
