#!/bin/sh
# demo.sh (`make demo`): runs the main job on real human DNA with the default model
# (models/default: Caduceus-PS trained on GRCh37 chr20 + chrX, see its MODEL_CARD.md):
# embeddings of 200 kb of chromosome 20 in 32 kb windows, and per-base predictions of its first
# 1,000 bases, then says where the output went. Data: data/hg37/20.fa.gz from `make data`, else
# the committed 1 Mb slice tests/data/real/chr20_1M.fa.gz.  Usage: sh tests/demo.sh path/to/mamba-dna
set -eu
BIN=${1:?usage: sh tests/demo.sh path/to/mamba-dna}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${DEMO_OUT:-$(dirname "$BIN")/demo}

FA=$ROOT/data/hg37/20.fa.gz
REGION=20:1000001-1200000
if [ ! -s "$FA" ] || [ ! -s "$FA.fai" ]; then
    FA=$ROOT/tests/data/real/chr20_1M.fa.gz
    REGION=$(cut -f1 "$FA.fai" | head -n1):1-200000
fi
[ -s "$FA" ] || { echo "demo: no chr20 FASTA (run 'make data')" >&2; exit 2; }

# The default model: -m is not given, so mamba-dna looks up $MAMBA_DNA_MODEL, then models/default.
if ! "$BIN" info --no-sha256 >/dev/null 2>&1; then
    echo "demo: no default model found (models/default or \$MAMBA_DNA_MODEL)" >&2
    exit 2
fi
mkdir -p "$OUT"
echo "demo: the default model" >&2
"$BIN" info --no-sha256 | sed 's/^/  /' >&2

echo "demo: mamba-dna embed -w 32768 -r $REGION $(basename "$FA")" >&2
"$BIN" embed -v -w 32768 -r "$REGION" -o "$OUT/chr20.w32k.npy" "$FA"

FIRST=${REGION%%-*}
PRED_REGION=$FIRST-$(( ${FIRST#*:} + 999 ))
echo "demo: mamba-dna predict -r $PRED_REGION (per-base A/C/G/T probabilities)" >&2
"$BIN" predict -r "$PRED_REGION" -o "$OUT/chr20.predict.tsv" "$FA"

echo
echo "demo: outputs in $OUT/"
echo "  $OUT/chr20.w32k.npy        embeddings, one float32 row per 32,768-base window"
echo "  $OUT/chr20.w32k.npy.bed    row index: contig, start, end, name, score, strand, first row, rows"
echo "  $OUT/chr20.w32k.npy.json   provenance (version, command line, model sha256, options)"
echo "  $OUT/chr20.predict.tsv     chrom pos ref pA pC pG pT entropy"
echo "first rows of the index:"
head -n 3 "$OUT/chr20.w32k.npy.bed" | sed 's/^/  /'
echo "first predictions:"
grep -v '^#' "$OUT/chr20.predict.tsv" | head -n 3 | sed 's/^/  /'
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
    /usr/bin/python3 -c "import numpy as np; a = np.load('$OUT/chr20.w32k.npy'); print('  array', a.shape, a.dtype, 'finite:', bool(np.isfinite(a).all()))"
fi
