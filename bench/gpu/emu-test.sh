#!/bin/sh
# Runs tests/gpu_parity on this machine without a GPU: the CUDA kernels compiled by g++ against the
# CPU stand-in kernels/emu/ (coroutine thread blocks, reference cuBLAS GEMM), compared with the
# CPU backend like on a real device. Checks indexing, strides, resets, carries, directions, state
# contracts, conversions and the GEMM argument mapping; not races between blocks, timing, or the
# GPU's approximate exp/log. Objects in build-emu/. MD_PARITY_QUICK=1 (default here) skips the
# 100003-length cases. EMU_TEST names another test (default tests/gpu_parity.c).
set -e
cd "$(dirname "$0")/../.."
B=${EMU_BUILD:-build-emu}
make -s BUILD=$B CUDA=0 "$B/libmambadna.a"
mkdir -p $B/emu/k
CXXFLAGS="-std=c++20 -O2 -g -Wall -Wextra -Wno-unknown-pragmas -fopenmp -DMD_CUDA_EMU -Ilib -Iformats -Ikernels"
for f in kernels/*.cu; do
    o=$B/emu/k/$(basename "$f" .cu).o
    if [ ! -f "$o" ] || [ "$f" -nt "$o" ] || [ kernels/common.cuh -nt "$o" ] || [ kernels/emu/cuda_emu.h -nt "$o" ]; then
        g++ $CXXFLAGS -x c++ -c -o "$o" "$f"
    fi
done
g++ $CXXFLAGS -c -o $B/emu/k/cuda_emu.o kernels/emu/cuda_emu.cpp
gcc -std=gnu11 -O2 -g -Wall -Wextra -DMD_WITH_CUDA -Ilib -Iformats -Ikernels -c -o $B/emu/backend_select.o lib/backend_select.c
T=${EMU_TEST:-tests/gpu_parity.c}
t=$(basename "$T" .c)
gcc -std=gnu11 -O2 -g -Wall -Wextra -DMD_WITH_CUDA -Ilib -Iformats -Ikernels -c -o $B/emu/$t.o "$T"
g++ -fopenmp -o $B/${t}_emu $B/emu/$t.o $B/emu/backend_select.o $B/emu/k/*.o "$B/libmambadna.a" \
    -lcmocka -lhts -ljansson -lopenblas -lcrypto -lz -lm -lpthread
MD_PARITY_QUICK=${MD_PARITY_QUICK:-1} ./$B/${t}_emu "$@"
