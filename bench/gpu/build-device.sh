#!/bin/sh
# Builds, on this (CPU-only) machine, what a run on the lent GPU machine needs and stages it in
# .gpu/ (ignored by git; name it in the device tool's `carry`): the CUDA build of the library
# (BUILD, default build-gpu), tests/gpu_parity, bench_gpu, and the shared libraries that machine
# lacks (cmocka, htslib and friends; it has zlib, OpenBLAS, jansson, libgomp and CUDA 13 with
# cuBLAS). Run bench/gpu/device-run.sh there.
set -e
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-gpu}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
GPU_TESTS=$(for f in tests/gpu_*.c; do echo "$BUILD/tests/$(basename "$f" .c)"; done)
make -s BUILD="$BUILD" CUDA=1 NVCC="$NVCC" "$BUILD/libmambadna.a" $GPU_TESTS "$BUILD/mamba-dna" "$BUILD/bench/heldout_eval"
CUDA_HOME=$(dirname "$(dirname "$NVCC")")
gcc -std=gnu11 -Wall -Wextra -O2 -Ilib -Iformats -Ikernels -DMD_WITH_CUDA -o "$BUILD/bench_gpu" \
    bench/gpu/bench_gpu.c "$BUILD/libmambadna.a" -fopenmp -lhts -ljansson -lopenblas -lcrypto -lz -lm \
    -lpthread -L"$CUDA_HOME/lib64" -lcublasLt -lcublas -lcudart_static -ldl -lrt -lstdc++
rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
cp $GPU_TESTS "$BUILD/bench_gpu" "$BUILD/bench/heldout_eval" .gpu/bin/
[ -x "$BUILD/mamba-dna" ] && cp "$BUILD/mamba-dna" .gpu/bin/ || true
for l in libcmocka.so.0 libcrypto.so.3 libhts.so.3 libdeflate.so.0 libhtscodecs.so.2; do
    cp -L "/lib/x86_64-linux-gnu/$l" .gpu/lib/
done
du -sh .gpu
# PACK=1: strip and compress into .gpu/bundle.tar.xz (~6 MB instead of ~55 MB; device-run.sh
# unpacks it), so that data can be carried beside it
if [ "${PACK:-0}" = 1 ]; then
    strip .gpu/bin/*
    tar -C .gpu -cf - bin lib | xz -T2 -6 > .gpu/bundle.tar.xz
    rm -rf .gpu/bin .gpu/lib
    du -sh .gpu
fi
