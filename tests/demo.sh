#!/bin/sh
# demo.sh (`make demo`): embeds real DNA (phage lambda, 48.5 kb) with the default model and says
# where the output went. Data: data/lambda/lambda.fa.gz from `make data`, else the committed
# copy in tests/data/real/. Usage: sh tests/demo.sh path/to/mamba-dna
set -eu
BIN=${1:?usage: sh tests/demo.sh path/to/mamba-dna}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${DEMO_OUT:-$(dirname "$BIN")/demo}

FA=$ROOT/data/lambda/lambda.fa.gz
[ -s "$FA" ] || FA=$ROOT/tests/data/real/lambda.fa.gz
[ -s "$FA" ] || { echo "demo: no lambda FASTA (run 'make data')" >&2; exit 2; }

# The default model: -m is not given, so mamba-dna looks up $MAMBA_DNA_MODEL, then models/default.
MODEL_OPT=""
if ! "$BIN" info --no-sha256 >/dev/null 2>&1; then
    MODEL_OPT="-m $ROOT/tests/data/conformance/ph_d128_n2"
    echo "demo: NOTE: no default model found (models/default or \$MAMBA_DNA_MODEL);" >&2
    echo "demo:       using the small untrained conformance checkpoint to show the pipeline." >&2
fi
mkdir -p "$OUT"
echo "demo: model" >&2
"$BIN" info --no-sha256 $MODEL_OPT | sed 's/^/  /' >&2

echo "demo: mamba-dna embed -w 1000 (one strand-averaged embedding per 1 kb window of lambda)" >&2
"$BIN" embed -v $MODEL_OPT -w 1000 -o "$OUT/lambda.w1000.npy" "$FA"

echo "demo: mamba-dna predict -r <lambda>:1-1000 (per-base A/C/G/T probabilities)" >&2
CONTIG=$(cut -f1 "$FA.fai" 2>/dev/null | head -n1 || true)
if [ -n "$CONTIG" ] && [ -s "$FA.fai" ]; then
    "$BIN" predict $MODEL_OPT -r "$CONTIG:1-1000" -o "$OUT/lambda.1-1000.predict.tsv" "$FA"
fi

echo
echo "demo: outputs in $OUT/"
echo "  $OUT/lambda.w1000.npy        embeddings, one float32 row per window"
echo "  $OUT/lambda.w1000.npy.bed    row index: contig, start, end, name, score, strand, first row, rows"
echo "  $OUT/lambda.w1000.npy.json   provenance (version, command line, model sha256, options)"
[ -s "$OUT/lambda.1-1000.predict.tsv" ] &&
    echo "  $OUT/lambda.1-1000.predict.tsv  chrom pos ref pA pC pG pT entropy"
echo "first rows of the index:"
head -n 3 "$OUT/lambda.w1000.npy.bed" | sed 's/^/  /'
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
    /usr/bin/python3 -c "import numpy as np; a = np.load('$OUT/lambda.w1000.npy'); print('  array', a.shape, a.dtype, 'finite:', bool(np.isfinite(a).all()))"
fi
