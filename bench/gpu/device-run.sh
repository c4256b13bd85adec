#!/bin/bash
# Runs on the lent GPU machine from the repository root, with .gpu/ carried (build-device.sh):
# environment check, GPU parity tests, per-op profile (scan variants), whole-model throughput
# (bf16, fp32, chunk and GEMM variants). Full logs go to $OUT (the device tool brings them back);
# a short table is printed last. Steps share one deadline (DEADLINE, default 540 s).
#   bench/gpu/device-run.sh [parity] [ops] [model] [fp32] [train] [pool]   (default: parity ops model fp32)
# pool: tests/gpu_pool (pool_sum, gather_rows, pinned buffers, pooled/selected forward outputs)
# with MD_POOL_BENCH=1 (pool_sum against downloading the same rows).
# train: GPU training throughput of `mamba-dna pretrain -d cuda` (needs data/hg37/20.fa.gz carried)
# and tests/gpu_train_parity (the CUDA training ops and whole steps against the CPU).
set -u
OUT=${OUT:-/tmp/md-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
# build-device.sh PACK=1 ships one compressed bundle (the carry limit is 64 MiB)
if [ -f .gpu/bundle.tar.xz ] && [ ! -d .gpu/bin ]; then tar -C .gpu -xJf .gpu/bundle.tar.xz; fi
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
if has tscan; then  # the training scan alone: parity (quick) and its per-layer timing
    t0=$(date +%s)
    MD_PARITY_QUICK=${TSCAN_QUICK:-1} T ${TSCAN_TIMEOUT:-60} .gpu/bin/gpu_train_scan > "$OUT/tscan.log" 2>&1
    rc_tscan=$?
    echo "== gpu_train_scan rc=$rc_tscan in $(( $(date +%s) - t0 )) s"
    grep -E '^FAIL|FAILED|PASSED' "$OUT/tscan.log" | head -10
    MD_TSCAN_BENCH=1 MD_PARITY_ONLY=test_bench T 40 .gpu/bin/gpu_train_scan 2>&1 | grep -i bench | tee "$OUT/tscan_bench.txt"
fi
if has pool; then  # output reduction ops (kernels/pool.cu) and the forward's pooled/selected outputs
    t0=$(date +%s)
    MD_POOL_BENCH=1 T ${POOL_TIMEOUT:-60} .gpu/bin/gpu_pool > "$OUT/pool.log" 2>&1
    rc_pool=$?
    echo "== gpu_pool rc=$rc_pool in $(( $(date +%s) - t0 )) s"
    grep -E '^FAIL|FAILED|PASSED|^bench' "$OUT/pool.log" | head -12
    sed -n '/== pool summary/,$p' "$OUT/pool.log"
fi
if has train; then
    t0=$(date +%s)
    T ${TRAIN_PARITY_TIMEOUT:-90} .gpu/bin/gpu_train_parity > "$OUT/train_parity.log" 2>&1
    rc_tparity=$?
    echo "== gpu_train_parity rc=$rc_tparity in $(( $(date +%s) - t0 )) s"
    grep -E '^FAIL' "$OUT/train_parity.log" | head -20
    sed -n '/== train parity summary/,$p' "$OUT/train_parity.log"
    # pretrain throughput: tokens/s between the first and the last update in train.tsv (start-up,
    # data loading and the first update excluded); peak GPU memory as nvidia-smi sees it (the
    # whole process: CUDA context, cuBLAS workspace, stream-ordered scratch), sampled every 100 ms
    FA=data/hg37/20.fa.gz
    if [ -r "$FA" ]; then
        printf '20\t10000000\t30000000\n' > "$OUT/train_regions.bed"   # 20 Mb loads in seconds
        base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
        printf '%-6s %4s %3s %8s %3s %-5s %12s %10s %12s  %s\n' variant d nl seq_len B prec tokens/s s/update peak_GPU_MiB status > "$OUT/train.tsv"
        # variant d_model n_layer seq_len batch steps timeout [precision]
        while read -r v d nl L b st to pr; do
            [ -n "$v" ] || continue
            pr=${pr:-bf16}
            o="$OUT/pretrain-$v-$d-$nl-$L-$b-$pr"
            nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$o.mem" 2>/dev/null &
            smi=$!
            T "$to" .gpu/bin/mamba-dna pretrain -o "$o" -d cuda --precision "$pr" --variant "$v" --d-model "$d" \
                --n-layer "$nl" --seq-len "$L" --batch "$b" --steps "$st" --warmup 1 --val-every 0 --save-every 0 \
                --no-progress -v --train-regions "$OUT/train_regions.bed" "$FA" > "$o.log" 2>&1
            rc=$?
            kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
            peak=$(sort -n "$o.mem" | tail -1)
            awk -F'\t' -v v="$v" -v d="$d" -v nl="$nl" -v L="$L" -v b="$b" -v pr="$pr" -v rc="$rc" \
                -v peak="${peak:-0}" -v base="${base:-0}" '
                NR == 2 { t0 = $2; e0 = $9 } NR > 2 { t1 = $2; e1 = $9; n++ }
                END { r = (n && e1 > e0) ? (t1 - t0) / (e1 - e0) : 0;
                      printf "%-6s %4d %3d %8d %3d %-5s %12.0f %10.3f %12d  rc=%d, %d timed updates\n", v, d, nl, L, b, pr,
                             r, (n ? (e1 - e0) / n : 0), peak - base, rc, n }' "$o/train.tsv" 2>/dev/null >> "$OUT/train.tsv" ||
                echo "$v $d $nl $L $b $pr: no train.tsv (rc=$rc; see $o.log)" >> "$OUT/train.tsv"
            [ "$rc" -ne 0 ] && tail -3 "$o.log" | sed 's/^/    /' >> "$OUT/train.tsv"
        done <<'EOF_CONFIGS'
ph 256 16 131072 1 6 40
ph 256 16 16384 8 6 30
ph 256 16 1048576 1 3 50
ps 128 8 32768 1 30 25
ps 128 8 32768 8 8 40
EOF_CONFIGS
    else
        echo "== train: $FA not carried; pretrain throughput skipped"
    fi
fi
echo "== ops (median ms per op, one layer)"
[ -f "$OUT/ops.tsv" ] && grep -v '^\[' "$OUT/ops.tsv" | cut -f1,3-6
echo "== model"
[ -f "$OUT/model.tsv" ] && cat "$OUT/model.tsv"
echo "== train (pretrain -d cuda; peak GPU MiB above the idle device)"
[ -f "$OUT/train.tsv" ] && cat "$OUT/train.tsv"
echo "parity rc=$rc_parity train parity rc=${rc_tparity:--}"
