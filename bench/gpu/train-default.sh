#!/bin/bash
# Trains the default model (models/default/) on the lent GPU, from the repository root with
# .gpu/ (bench/gpu/build-device.sh) and data/hg37/ carried: Caduceus-PS, d_model 128, 8 layers,
# masked LM at 32,768 bases per sequence on GRCh37 chr20 + chrX 0-70 Mb, with
# 20:1,000,001-4,000,000 (the 1000 Genomes variants' region) and X:40,000,001-42,000,000 held out.
# One device call runs at most ~9 minutes, so the run stops itself (--stop-after) and a later
# call continues it with --resume from the folder carried back (RESUME_FROM=path).
#   STEPS (total updates), STOP_AFTER (this call's last update), BATCH, LR: see below.
# Output: $OUT/default (the model folder, train.tsv, train_state.bin), $OUT/train.log.
set -u
OUT=${OUT:-/tmp/md-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [ -f .gpu/bundle.tar.xz ] && [ ! -d .gpu/bin ]; then tar -C .gpu -xJf .gpu/bundle.tar.xz; fi
M="$OUT/default"
if [ -n "${RESUME_FROM:-}" ]; then
    cp -r "$RESUME_FROM" "$M"
    resume=--resume
else
    resume=
fi
args=(-d cuda -o "$M" --variant ps --d-model 128 --n-layer 8 --seq-len 32768
      --batch "${BATCH:-8}" --steps "${STEPS:-2000}" --lr "${LR:-0.008}" --warmup "${WARMUP:-0.05}"
      --holdout 20:1000001-4000000 --holdout X:40000001-42000000 --val-windows 64
      --val-every "${VAL_EVERY:-100}" --save-every "${SAVE_EVERY:-100}" --seed 2222 -v
      data/hg37/20.fa.gz data/hg37/X70.fa.gz)
[ -n "${STOP_AFTER:-}" ] && args+=(--stop-after "$STOP_AFTER")
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
t0=$(date +%s)
timeout "${LIMIT:-540}" .gpu/bin/mamba-dna pretrain $resume "${args[@]}" 2> "$OUT/train.log"
rc=$?
echo "pretrain rc=$rc in $(( $(date +%s) - t0 )) s"
tail -n 5 "$OUT/train.log"
tail -n 3 "$M/train.tsv" 2>/dev/null
ls -la "$M"
