#!/bin/sh
# score.sh [BIN]: the real run of `mamba-dna score` (issue 6, section 6). Scores the 1000 Genomes
# chr20 records of the shapeit4 example (24,990 records, 300 samples) against GRCh37 chr20, both
# from `make data`, in masked and in unmasked mode, and prints records/s and the bases/s that went
# through the model; then the plain forward throughput of the same model and window (`embed` over
# chr20:1,000,001-4,000,000, one strand), and the AUROC of MAMBA_LLR for separating common
# (AF > 5%) from rare (AF < 0.5%) SNVs next to an order-k Markov model's LLR
# (bench/markov_llr.py, trained on chr20 outside the scored interval). Exit 0 and a "skip" line
# when data/ is missing.
# Environment: BENCH_MODEL (model folder; default: the default model lookup), BENCH_DEVICE (cpu),
# BENCH_THREADS (all CPUs), BENCH_WINDOW (the model's default), BENCH_BATCH (the default),
# BENCH_REGION (score only this region of the VCF, e.g. 20:1000000-1200000, for slow machines),
# BENCH_FORWARD_REGION (20:1000001-4000000), BENCH_MODES ("masked unmasked"), BENCH_OUT (keep outputs in this folder), BENCH_AUROC (1; 0
# skips the Markov baseline), BENCH_K (Markov order, 6).
# Output: TSV lines "score", "forward" and "auroc" (see the header lines it prints).
set -u
BIN=${1:-build/mamba-dna}
cd "$(dirname "$0")/.." || exit 1
VCF=${BENCH_VCF:-data/1kg/chr20.vcf.gz}
FA=${BENCH_FASTA:-data/hg37/20.fa.gz}
if [ ! -f "$VCF" ] || [ ! -f "$FA" ]; then
    echo "skip: bench/score.sh: $VCF or $FA missing (run 'make data')"
    exit 0
fi
[ -x "$BIN" ] || { echo "bench/score.sh: $BIN is not executable (run make first)" >&2; exit 1; }
DEV=${BENCH_DEVICE:-cpu}
THR=${BENCH_THREADS:-$(nproc)}
MODES=${BENCH_MODES:-masked unmasked}
OUTD=${BENCH_OUT:-}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/md-bench-score.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
[ -n "$OUTD" ] || OUTD=$TMP
mkdir -p "$OUTD"
set -- -d "$DEV" -t "$THR" --no-progress -f "$FA"
[ -n "${BENCH_MODEL:-}" ] && set -- "$@" -m "$BENCH_MODEL"
[ -n "${BENCH_WINDOW:-}" ] && set -- "$@" -w "$BENCH_WINDOW"
[ -n "${BENCH_BATCH:-}" ] && set -- "$@" --batch-size "$BENCH_BATCH"
[ -n "${BENCH_REGION:-}" ] && set -- "$@" -r "$BENCH_REGION"
now() { date +%s.%N; }

echo "# model: ${BENCH_MODEL:-default}; device $DEV; threads $THR; input $VCF${BENCH_REGION:+ ($BENCH_REGION)}"
printf 'score\tdevice\tmode\trecords\tseconds\trecords_per_s\tmodel_bases\tmodel_bases_per_s\twindow\n'
W=
for mode in $MODES; do
    t0=$(now)
    if ! "$BIN" score "$@" --mode "$mode" -o "$OUTD/$mode.vcf.gz" --tsv "$OUTD/$mode.tsv.gz" "$VCF" \
         2> "$OUTD/$mode.log"; then
        echo "bench/score.sh: score --mode $mode failed:" >&2
        tail -5 "$OUTD/$mode.log" >&2
        exit 1
    fi
    t1=$(now)
    n=$(sed -n 's/^\[M::score\] \([0-9]*\) records.*/\1/p' "$OUTD/$mode.log")
    b=$(sed -n 's/^\[M::score\] [0-9]* windows (\([0-9]*\) bases).*/\1/p' "$OUTD/$mode.log")
    W=$(zcat "$OUTD/$mode.vcf.gz" | sed -n 's/.*##INFO=<ID=MAMBA_LLR.*, window \([0-9]*\) .*/\1/p' | head -1)
    echo "$DEV $mode $n $t0 $t1 $b $W" | awk '{ d = $5 - $4; printf "score\t%s\t%s\t%d\t%.1f\t%.1f\t%d\t%.0f\t%s\n", $1, $2, $3, d, $3 / d, $6, $6 / d, $7 }'
done

# plain forward throughput, same model and window: pooled embeddings of 3 Mb, one strand
printf 'forward\tdevice\twindow\tbases\tseconds\tbases_per_s\n'
FREG=${BENCH_FORWARD_REGION:-20:1000001-4000000}
FLEN=$(echo "$FREG" | awk -F'[:-]' '{ print $3 - $2 + 1 }')
set -- -d "$DEV" -t "$THR" --no-progress --rc none -w "${W:-512}" -r "$FREG"
[ -n "${BENCH_MODEL:-}" ] && set -- "$@" -m "$BENCH_MODEL"
t0=$(now)
if "$BIN" embed "$@" -o "$TMP/fwd.npy" "$FA" 2> "$OUTD/forward.log"; then
    t1=$(now)
    echo "$DEV ${W:-512} $t0 $t1 $FLEN" | awk '{ d = $4 - $3; printf "forward\t%s\t%s\t%d\t%.1f\t%.0f\n", $1, $2, $5, d, $5 / d }'
else
    echo "forward	$DEV	${W:-512}	-	-	failed (see $OUTD/forward.log)"
fi

if [ "${BENCH_AUROC:-1}" = 1 ] && [ -f "$OUTD/masked.tsv.gz" ]; then
    echo "# AUROC, common (AF > 5%) vs rare (AF < 0.5%) SNVs; MAMBA_LLR of --mode masked"
    /usr/bin/python3 bench/markov_llr.py --fasta "$FA" --vcf "$VCF" --scores "$OUTD/masked.tsv.gz" \
        --k "${BENCH_K:-6}" | sed 's/^/auroc\t/'
fi
