#!/bin/bash
# Multi-GPU pretraining on a machine with >= 2 GPUs (issue 9), from the repository root with .gpu/
# (PACK=1 sh bench/gpu/build-device.sh) and data/hg37/20.fa.gz carried; a few minutes:
#  (1) equivalence: `--gpus 2` against one GPU with `--grad-accum 2` (same global batch, tiny PS
#      model on lambda phage, 30 updates): largest relative difference of the loss tables;
#  (2) scaling: Caduceus-Ph d256 x 16 at 131,072 tokens per GPU per update, --gpus 1, 2 (and 4, 8
#      when present): tokens/s between the first and the last logged update.
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0). Logs in $OUT/dscale/.
set -u
OUT=${OUT:-/tmp/md-out}
D=$OUT/dscale
mkdir -p "$D"
export NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [ -f .gpu/bundle.tar.xz ] && [ ! -d .gpu/bin ]; then tar -C .gpu -xJf .gpu/bundle.tar.xz; fi
BIN=${BIN:-.gpu/bin/mamba-dna}
NG=$(nvidia-smi -L | wc -l)
nvidia-smi -L
LAMBDA=tests/data/real/lambda.fa.gz
HOLD='gi|9626243|ref|NC_001416.1|:40001-48502'
A=(-d cuda --variant ps --d-model 64 --n-layer 2 --seq-len 2048 --batch 4 --steps 30 --val-every 10 --save-every 0
   --val-windows 8 --holdout "$HOLD" --seed 7 -t 4 -v)
tsvdiff() { paste "$1" "$2" | awk -F'\t' 'NR > 1 { h = NF / 2; for (i = 1; i <= h; i++) { a = $i; b = $(i + h);
    if (a == b) continue; if (a == "NA" || b == "NA") { m = 1e9; continue }
    d = a - b; if (d < 0) d = -d; s = b < 0 ? -b : b; if (s < 1e-12) s = 1e-12; if (d / s > m) m = d / s } }
    END { printf "%.3g\n", m + 0 }'; }
echo "== (1) --gpus 2 against one GPU with --grad-accum 2"
rm -rf "$D/accum2" "$D/gpus2"
timeout 120 "$BIN" pretrain -o "$D/accum2" "${A[@]}" --grad-accum 2 "$LAMBDA" > "$D/accum2.log" 2>&1; r1=$?
timeout 120 "$BIN" pretrain -o "$D/gpus2" "${A[@]}" --gpus 2 "$LAMBDA" > "$D/gpus2.log" 2>&1; r2=$?
echo "rc: accum2 $r1, gpus2 $r2"
if [ -f "$D/accum2/train.tsv" ] && [ -f "$D/gpus2/train.tsv" ]; then
    cut -f1-8 "$D/accum2/train.tsv" > "$D/a.tsv"; cut -f1-8 "$D/gpus2/train.tsv" > "$D/g.tsv"
    echo "max relative difference of the loss tables (columns 1-8, 30 updates): $(tsvdiff "$D/a.tsv" "$D/g.tsv")"
    tail -n 2 "$D/a.tsv"; tail -n 2 "$D/g.tsv"
else
    tail -n 5 "$D/accum2.log" "$D/gpus2.log"
fi
echo "== (2) scaling, Ph d256 x 16, 131072 tokens per GPU per update"
printf '20\t10000000\t30000000\n' > "$D/regions.bed"
for n in 1 2 4 8; do
    [ "$n" -le "$NG" ] || break
    o="$D/ph-$n"
    rm -rf "$o"
    timeout 150 "$BIN" pretrain -o "$o" -d cuda --variant ph --d-model 256 --n-layer 16 --seq-len 131072 --batch 1 \
        --steps 8 --warmup 1 --val-every 0 --save-every 0 --no-progress -v --gpus "$n" \
        --train-regions "$D/regions.bed" data/hg37/20.fa.gz > "$o.log" 2>&1
    rc=$?
    awk -F'\t' -v n="$n" -v rc="$rc" 'NR == 2 { t0 = $2; e0 = $9 } NR > 2 { t1 = $2; e1 = $9; k++ }
        END { r = (k && e1 > e0) ? (t1 - t0) / (e1 - e0) : 0;
              printf "gpus %d: %.0f tokens/s over %d updates (%.0f per GPU), rc=%d\n", n, r, k, r / n, rc }' "$o/train.tsv" 2>/dev/null ||
        { echo "gpus $n: no train.tsv (rc=$rc)"; tail -n 3 "$o.log"; }
done
