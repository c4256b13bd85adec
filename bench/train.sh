#!/bin/sh
# bench/train.sh: training throughput of `mamba-dna pretrain` (tokens/s = input positions per
# second through forward + backward + AdamW) for small models, on GRCh37 chr20 windows from
# tests/data/real/chr20_1M.fa.gz. Each configuration runs STEPS updates; the rate is taken from
# train.tsv between the first and the last update (so start-up and data loading are excluded).
#   sh bench/train.sh [BIN] [THREADS] [DEVICE]
# BENCH_TRAIN_CONFIGS overrides the list: "variant d_model n_layer seq_len batch" per line.
set -eu
BIN=${1:-build/mamba-dna}
THREADS=${2:-$(nproc)}
DEVICE=${3:-cpu}
STEPS=${BENCH_TRAIN_STEPS:-6}
cd "$(dirname "$0")/.."
FA=tests/data/real/chr20_1M.fa.gz
[ -x "$BIN" ] || { echo "bench/train.sh: $BIN is not executable (make first)" >&2; exit 1; }
[ -r "$FA" ] || { echo "bench/train.sh: $FA missing" >&2; exit 1; }
CONFIGS=${BENCH_TRAIN_CONFIGS:-"ps 128 2 1024 4
ph 128 2 1024 4
mamba 128 2 1024 4
ps 128 8 4096 1"}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/md-bench-train.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "== pretrain throughput, device $DEVICE, $THREADS threads ($(nproc) cores: $cpu; load $(cut -d' ' -f1 /proc/loadavg))"
printf '%-6s %7s %7s %7s %5s %12s %10s %10s\n' variant d_model n_layer seq_len batch tokens/s s/update peak_MB
echo "$CONFIGS" | while read -r v d nl L b; do
    [ -n "$v" ] || continue
    out=$TMP/$v-$d-$nl-$L
    /usr/bin/time -f %M -o "$TMP/rss" "$BIN" pretrain -o "$out" --variant "$v" --d-model "$d" --n-layer "$nl" \
        --seq-len "$L" --batch "$b" --steps "$STEPS" --val-every 0 --save-every 0 -t "$THREADS" -d "$DEVICE" \
        --no-progress "$FA" 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
    awk -F'\t' -v v="$v" -v d="$d" -v nl="$nl" -v L="$L" -v b="$b" -v rss="$(cat "$TMP/rss")" '
        NR == 2 { t0 = $2; e0 = $9 } NR > 2 { t1 = $2; e1 = $9; n++ }
        END { r = (e1 > e0) ? (t1 - t0) / (e1 - e0) : 0;
              printf "%-6s %7d %7d %7d %5d %12.0f %10.2f %10.0f\n", v, d, nl, L, b, r, (n ? (e1 - e0) / n : 0), rss / 1024 }' \
        "$out/train.tsv"
done
