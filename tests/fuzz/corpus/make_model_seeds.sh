#!/bin/sh
# make_model_seeds.sh BIN: writes the fuzz_model seeds into corpus/model/: one tiny model (d_model 8,
# 1 layer, d_state 4) per variant trained 2 steps with `BIN pretrain`, packed as
# [u16 LE length of config.json][config.json][model.safetensors] (see fuzz_model.c).
set -eu
BIN=${1:?usage: sh make_model_seeds.sh /path/to/mamba-dna}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/md-model-seeds.XXXXXX")
trap 'rm -rf "$T"' EXIT
for v in ph ps mamba; do
    "$BIN" pretrain -o "$T/$v" --variant "$v" --d-model 8 --n-layer 1 --d-state 4 --seq-len 64 \
        --batch 2 --steps 2 --val-every 0 --holdout seq_L1000:1-100 -d cpu -t 1 --no-progress \
        "$ROOT/tests/data/conformance/ph_d128_n2/input_L1000.fa" 2>/dev/null
    python3 - "$T/$v" "$HERE/model/tiny_$v.bin" <<'PY'
import struct, sys
d, out = sys.argv[1], sys.argv[2]
cfg = open(d + '/config.json', 'rb').read()
st = open(d + '/model.safetensors', 'rb').read()
open(out, 'wb').write(struct.pack('<H', len(cfg)) + cfg + st)
PY
done
