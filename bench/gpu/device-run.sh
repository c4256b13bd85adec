#!/bin/bash
# Runs on the lent GPU machine from the repository root, with .gpu/ carried (build-device.sh):
# environment check, GPU parity tests, per-op profile (scan variants), whole-model throughput
# (bf16, fp32, chunk and GEMM variants). Full logs go to $OUT (the device tool brings them back);
# a short table is printed last. Steps share one deadline (DEADLINE, default 540 s).
#   bench/gpu/device-run.sh [parity] [ops] [model] [fp32]     (default: all of them)
set -u
OUT=${OUT:-/tmp/md-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
STAGES=${*:-parity ops model fp32}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
B=.gpu/bin/bench_gpu
# one deadline for the whole script (default 540 s, inside the device tool's 600 s per call):
# every step gets min(its own limit, what is left) and is skipped when under 10 s are left
DEADLINE=${DEADLINE:-540}
lim() { local l=$(( DEADLINE - SECONDS )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
T() { local l; l=$(lim "$1"); shift; if [ "$l" -lt 10 ]; then echo "skipped (deadline): $*" >&2; return 124; fi; timeout "$l" "$@"; }
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
    ls /usr/local/cuda/lib64 | grep -E 'cublas|cudart' | head
    ldd .gpu/bin/gpu_parity | grep -E 'not found|cublas|openblas'
    echo "cores: $(nproc)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
rc_parity=-
if has parity; then
    t0=$(date +%s)
    T ${PARITY_TIMEOUT:-200} .gpu/bin/gpu_parity > "$OUT/parity.log" 2>&1
    rc_parity=$?
    echo "== gpu_parity rc=$rc_parity in $(( $(date +%s) - t0 )) s"
    grep -E '^(FAIL|\[  FAILED|\[  PASSED)' "$OUT/parity.log" | head -20
    sed -n '/== parity summary/,$p' "$OUT/parity.log"
    if has fp32; then  # is cuBLAS's bf16x9 FP32 emulation inside the fp32 bound?
        MD_CUDA_FP32_GEMM=bf16x9 MD_PARITY_ONLY=test_gemm T 40 .gpu/bin/gpu_parity > "$OUT/parity_bf16x9.log" 2>&1
        echo "== gemm parity with MD_CUDA_FP32_GEMM=bf16x9: rc=$?"; grep -E 'gemm +fp32' "$OUT/parity_bf16x9.log" | head -8
    fi
fi
if has ops; then
    { T 60 $B ops -p bf16 -r 5 131072 1048576
      for v in 2 4; do MD_CUDA_SCAN_POLY=$v T 20 $B ops -p bf16 -r 5 1048576 | sed "s/\tscan/\tpoly$v scan/"; done
      for v in 256 1024; do MD_CUDA_SCAN_NSEG=$v T 20 $B ops -p bf16 -r 5 1048576 | sed "s/\tscan/\tnseg$v scan/"; done
      if has fp32; then T 40 $B ops -p fp32 -r 3 1048576; fi
    } > "$OUT/ops.tsv" 2>&1
fi
if has model; then
    { T 80 $B model -p bf16 -r 3 131072 1048576 4194304
      T 40 $B model -p bf16 -r 3 -c 131072 131072 1048576
      MD_CUDA_SCAN_POLY=2 T 30 $B model -p bf16 -r 3 131072 1048576 | sed 's/forward/forward poly2/'
      if has fp32; then
          T 60 $B model -p fp32 -r 2 131072 1048576
          MD_CUDA_FP32_GEMM=bf16x9 T 40 $B model -p fp32 -r 2 1048576 | sed 's/forward/forward bf16x9/'
      fi
    } > "$OUT/model.tsv" 2>&1
fi
echo "== ops (median ms per op, one layer)"
[ -f "$OUT/ops.tsv" ] && grep -v '^\[' "$OUT/ops.tsv" | cut -f1,3-6
echo "== model"
[ -f "$OUT/model.tsv" ] && cat "$OUT/model.tsv"
echo "parity rc=$rc_parity"
