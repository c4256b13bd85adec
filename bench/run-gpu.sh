#!/bin/sh
# make bench-gpu: the GPU figures (kernels/NOTES.md keeps them with their predictions):
#   1. one BiMamba layer of Caduceus-Ph d256 op by op (median ms, GB/s, TFLOP/s, T updates/s)
#      at L = 131072 and 1048576 in bf16, 1048576 in fp32;
#   2. forward throughput and peak GPU memory of the whole model (random weights, 16 layers) at
#      L = 131072, 1048576, 4194304 (bf16) and 131072, 1048576 (fp32);
#   3. the baseline quoted beside it (PyTorch + mamba_ssm on an H100, from the issue).
# BENCH_GPU_LENGTHS overrides the model lengths. Needs a CUDA build and a device.
set -e
BIN=${1:-build/mamba-dna}
BUILD=$(dirname "$BIN")
cd "$(dirname "$0")/.."
[ -f "$BUILD/libmambadna.a" ] || { echo "bench-gpu: run through 'make bench-gpu'" >&2; exit 1; }
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUDA_HOME=$(dirname "$(dirname "$NVCC")")
nm "$BUILD/libmambadna.a" 2>/dev/null | grep -q ' T md_backend_cuda_open' ||
    { echo "bench-gpu: $BUILD/libmambadna.a was built without CUDA (make CUDA=1)" >&2; exit 1; }
${CC:-cc} -std=gnu11 -O2 -Ilib -Iformats -Ikernels -DMD_WITH_CUDA -o "$BUILD/bench_gpu" bench/gpu/bench_gpu.c \
    "$BUILD/libmambadna.a" -fopenmp -lhts -ljansson -lopenblas -lcrypto -lz -lm -lpthread \
    -L"$CUDA_HOME/lib64" -lcublasLt -lcublas -lcudart_static -ldl -lrt -lstdc++
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/== GPU: /' || true
echo "== one layer, op by op (precision, L, op, median ms, rate)"
"$BUILD/bench_gpu" ops -p bf16 131072 1048576 | cut -f1,3-6
"$BUILD/bench_gpu" ops -p fp32 -r 3 1048576 | cut -f1,3-6
echo "== whole model, Caduceus-Ph d256 x16, batch 1, one strand"
"$BUILD/bench_gpu" model -p bf16 -r 3 ${BENCH_GPU_LENGTHS:-131072 1048576 4194304}
"$BUILD/bench_gpu" model -p fp32 -r 2 ${BENCH_GPU_LENGTHS:-131072 1048576}
echo "== baseline (PyTorch + mamba_ssm, H100, from the CUDA-backend issue): bf16 0.84 / 0.41 / 0.38 M bases/s at 131k / 1M / 4M; fp32 0.43 / 0.29 M at 131k / 1M"
