#!/bin/bash
# Runs on the lent GPU machine (repository root, .gpu/ carried): the scan kernels side by side.
# Parity (all of tests/gpu_parity with the default scan), per-op times at L = 1M with each scan
# variant (SCANS="label=VAR=value,... ..."), whole-model throughput, Nsight Compute profiles of single scan
# launches (NCU_RUNS="label=kernel-regex=VAR=value,..."). Logs in $OUT.   bench/gpu/scan-profile.sh [parity] [ops] [model] [ncu]
set -u
OUT=${OUT:-/tmp/md-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [ -f .gpu/bundle.tar.xz ] && [ ! -d .gpu/bin ]; then tar -C .gpu -xJf .gpu/bundle.tar.xz; fi
STAGES=${*:-parity ops model ncu}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
B=.gpu/bin/bench_gpu
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
if has parity; then
    t0=$SECONDS
    timeout ${PARITY_TIMEOUT:-200} .gpu/bin/gpu_parity > "$OUT/parity.log" 2>&1
    echo "== gpu_parity rc=$? in $((SECONDS - t0)) s"
    grep -E '^FAIL|\[  FAILED|\[  PASSED' "$OUT/parity.log" | head -20
    sed -n '/== parity summary/,$p' "$OUT/parity.log"
fi
if has ops; then
    # variants: label=VAR=value,VAR=value (default: the v1 prefetch depths and v3)
    for spec in ${SCANS:-v1=MD_CUDA_SCAN=v1 v2=MD_CUDA_SCAN=v2}; do
        label=${spec%%=*}; vars=${spec#*=}
        env ${vars//,/ } timeout 60 $B ops -p bf16 -r 5 1048576 | sed "s/\tscan/\t$label scan/"
    done 2>&1 | tee "$OUT/ops.tsv" | grep -E 'scan|layer'
fi
if has model; then
    { timeout 90 $B model -p bf16 -r 3 131072 1048576 4194304
      timeout 40 $B model -p bf16 -r 3 -c 131072 131072 1048576
      timeout 60 $B model -p fp32 -r 2 131072 1048576
    } 2>&1 | tee "$OUT/model.tsv"
fi
if has ncu; then
    NCU_BIN=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    echo "== ncu: $NCU_BIN"
    # NCU_RUNS: label=kernel-regex=VAR=value,...
    for spec in ${NCU_RUNS:-pass3=scan_pass3=MD_CUDA_SCAN=v1 pass1=scan_pass1=MD_CUDA_SCAN=v1}; do
        label=${spec%%=*}; rest=${spec#*=}; k=${rest%%=*}; vars=${rest#*=}
        timeout 150 "$NCU_BIN" --clock-control none -k "regex:$k" -c 1 --section SpeedOfLight --section Occupancy \
            --section LaunchStats --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
            --section MemoryWorkloadAnalysis --section InstructionStats --metrics \
            smsp__pcsamp_warps_issue_stalled_long_scoreboard,smsp__pcsamp_warps_issue_stalled_barrier,smsp__pcsamp_warps_issue_stalled_math_pipe_throttle,smsp__pcsamp_warps_issue_stalled_short_scoreboard,smsp__pcsamp_warps_issue_stalled_wait,smsp__pcsamp_warps_issue_stalled_mio_throttle,smsp__pcsamp_warps_issue_stalled_lg_throttle,smsp__pcsamp_warps_issue_stalled_not_selected,smsp__pcsamp_warps_issue_stalled_selected,smsp__pcsamp_warps_issue_stalled_dispatch_stall \
            env ${vars//,/ } $B ops -p bf16 -r 1 1048576 > "$OUT/ncu_$label.txt" 2>&1
        echo "== ncu $label ($k, $vars) rc=$?"
        grep -E 'Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Executed Instructions  |Compute \(SM\) Throughput|Memory Throughput|L1/TEX Hit|L2 Hit|stalled' "$OUT/ncu_$label.txt" | head -30
    done
fi
