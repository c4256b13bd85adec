#!/bin/sh
# heldout.sh [MODEL_DIR] [BUILD_DIR]: the default model's held-out evaluation (model card figure).
# Runs BUILD_DIR/bench/heldout_eval (default build/, built with make when missing) on GRCh37 chr20
# + chrX 0-70 Mb (tests/fetch-data.sh) with the pretraining held-out regions
# 20:1,000,001-4,000,000 and X:40,000,001-42,000,000: masked-position CE and accuracy of the model
# next to the order-k Markov (k 0..12) and symmetric k-mer (k 1..6) baselines fitted on the rest.
# Without MODEL_DIR only the baselines run. Writes bench/results/heldout-<date>.tsv (the table
# also goes to stderr). Environment: HELDOUT_DEVICE (auto), HELDOUT_THREADS (nproc),
# HELDOUT_WINDOW (the model's max_seq_len), HELDOUT_SEED (1), HELDOUT_POSITIONS (a path for the
# per-position log-probabilities, none by default), HELDOUT_ARGS (more heldout_eval options).
set -e
MODEL=${1:-}
BUILD=${2:-build}
cd "$(dirname "$0")/.."
HE=$BUILD/bench/heldout_eval
[ -x "$HE" ] || make BUILD="$BUILD" "$HE" >&2
for f in data/hg37/20.fa.gz data/hg37/X70.fa.gz; do
    [ -f "$f" ] || { echo "heldout.sh: $f not found; run make data (tests/fetch-data.sh)" >&2; exit 1; }
done
mkdir -p bench/results
OUT=bench/results/heldout-$(date +%Y-%m-%d).tsv
set -- --holdout 20:1,000,001-4,000,000 --holdout X:40,000,001-42,000,000 \
    -d "${HELDOUT_DEVICE:-auto}" -t "${HELDOUT_THREADS:-$(nproc)}" --seed "${HELDOUT_SEED:-1}" -o "$OUT"
[ -n "$MODEL" ] && set -- "$@" -m "$MODEL"
[ -n "${HELDOUT_WINDOW:-}" ] && set -- "$@" -w "$HELDOUT_WINDOW"
[ -n "${HELDOUT_POSITIONS:-}" ] && set -- "$@" --positions "$HELDOUT_POSITIONS"
# shellcheck disable=SC2086
"$HE" -v "$@" ${HELDOUT_ARGS:-} data/hg37/20.fa.gz data/hg37/X70.fa.gz
echo "heldout.sh: wrote $OUT" >&2
