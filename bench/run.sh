#!/bin/sh
# make bench: CPU figures quoted in the README.
#   1. forward throughput and peak RSS of the Caduceus-Ph 131k configuration (random weights)
#      at L = 131,072 and 1,048,576 (bench_forward, CPU backend, all cores);
#   2. the same model in straightforward PyTorch on the CPU (bench/pytorch_cpu.py, sequential
#      scan; throughput of a sequential scan does not depend on L, so it runs at L = 4,096);
#   3. the reader benchmarks (bench/readers.sh) when present.
# BENCH_LENGTHS overrides the lengths of step 1.
set -e
BIN=${1:-build/mamba-dna}
BUILD=$(dirname "$BIN")
cd "$(dirname "$0")/.."
[ -x "$BUILD/bench/bench_forward" ] || { echo "bench: run through 'make bench'" >&2; exit 1; }
echo "== model forward, CPU ($(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
# the OpenBLAS kernel set matters (AVX-512 sgemm is ~1.8x the Haswell one on AVX-512 CPUs)
echo "   OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (OpenBLAS picks by CPU)}"
"$BUILD/bench/bench_forward" -d cpu ${BENCH_LENGTHS:-131072 1048576}
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "== same model in PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') on the CPU (sequential scan)"
    /usr/bin/python3 bench/pytorch_cpu.py ${PYTORCH_LENGTH:-4096} 256 16 "$(nproc)"
else
    echo "== PyTorch comparison skipped: python3-torch is not installed (apt-get install python3-torch)"
fi
[ -f bench/readers.sh ] && sh bench/readers.sh "$BUILD" || true
