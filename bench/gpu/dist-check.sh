#!/bin/bash
# Checks multi-GPU pretraining (lib/dist.c, pretrain --gpus) on the lent GPU machine, from the
# repository root with .gpu/ carried (PACK=1 sh bench/gpu/build-device.sh); about a minute:
#  (a) where libnccl.so.2 is (ldconfig, CUDA, Python site-packages) and which one the tool loads;
#  (b) `pretrain --gpus 1 --nccl` (the NCCL path with one rank: id exchange, communicator, the
#      all-reduces of the loss normaliser, statistics and gradients) against the plain
#      `pretrain -d cuda` run of the same tiny model on lambda phage: the loss tables (all
#      columns but elapsed time) and model.safetensors must be bitwise equal. A second plain run
#      shows whether the single-GPU run itself is bitwise reproducible; if it is not, (b) says so
#      and compares at 1e-5 relative instead;
#  (c) two ranks on the one GPU (MD_DIST_DEVICES=0,0) with NCCL_DEBUG=WARN: what NCCL says
#      (expected: a duplicate-GPU error), and that the launcher ends both ranks (no hang).
# Exit status 0 when (b) passed. Logs and tables in $OUT/dist/.
set -u
OUT=${OUT:-/tmp/md-out}
D=$OUT/dist
mkdir -p "$D"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [ -f .gpu/bundle.tar.xz ] && [ ! -d .gpu/bin ]; then tar -C .gpu -xJf .gpu/bundle.tar.xz; fi
BIN=${BIN:-.gpu/bin/mamba-dna}
[ -x "$BIN" ] || { echo "dist-check: $BIN missing (PACK=1 sh bench/gpu/build-device.sh, carry .gpu)"; exit 2; }

echo "== (a) libnccl.so.2"
ldconfig -p | grep -i 'libnccl' || echo "not in the ldconfig cache"
found=$( { ls /usr/local/cuda*/lib*/libnccl.so.2 /usr/lib/x86_64-linux-gnu/libnccl.so.2 2>/dev/null
           for py in python3 python; do
               command -v $py >/dev/null || continue
               for sp in $($py -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
                   [ -d "$sp" ] && find "$sp" -maxdepth 4 -name 'libnccl.so*' 2>/dev/null
               done
           done; } | sort -u)
echo "${found:-no libnccl.so* found in CUDA or site-packages}"
if [ -z "${MD_NCCL_LIB:-}" ] && ! ldconfig -p | grep -q 'libnccl.so.2 '; then
    first=$(echo "$found" | grep 'libnccl.so.2$' | head -n1)
    [ -n "$first" ] && export MD_NCCL_LIB=$first
fi
echo "MD_NCCL_LIB=${MD_NCCL_LIB:-(unset: the search path of the loader)}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}

LAMBDA=tests/data/real/lambda.fa.gz
HOLD='gi|9626243|ref|NC_001416.1|:40001-48502'
ARGS=(-d cuda --variant ps --d-model 64 --n-layer 2 --seq-len 2048 --batch 4 --grad-accum 2 --steps 30
      --val-every 10 --save-every 10 --val-windows 8 --holdout "$HOLD" --seed 7 -t 4 -v)
train() {   # name, extra options...
    local name=$1; shift
    rm -rf "$D/$name"
    local t0=$SECONDS rc=0
    timeout 100 "$BIN" pretrain -o "$D/$name" "${ARGS[@]}" "$@" "$LAMBDA" > "$D/$name.log" 2>&1 || rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s; $(grep -o 'update [0-9]*/[0-9]*.*tok/s' "$D/$name.log" | tail -n1)"
    [ -f "$D/$name/train.tsv" ] && cut -f1-8 "$D/$name/train.tsv" > "$D/$name.tsv"
    return $rc
}
# largest relative difference between the numeric cells of two tables
tsvdiff() { paste "$1" "$2" | awk -F'\t' 'NR > 1 { h = NF / 2; for (i = 1; i <= h; i++) { a = $i; b = $(i + h);
    if (a == b) continue; if (a == "NA" || b == "NA") { m = 1e9; continue }
    d = a - b; if (d < 0) d = -d; s = b < 0 ? -b : b; if (s < 1e-12) s = 1e-12; if (d / s > m) m = d / s } }
    END { printf "%.3g\n", m + 0 }'; }

echo "== (b) --gpus 1 --nccl against the plain single-GPU run"
pass=0
if train plain && train plain2 && train nccl1 --gpus 1 --nccl; then
    grep -h 'NCCL group\|NCCL' "$D/nccl1.log" | head -n3
    repro=1
    cmp -s "$D/plain.tsv" "$D/plain2.tsv" && cmp -s "$D/plain/model.safetensors" "$D/plain2/model.safetensors" || repro=0
    echo "plain run bitwise reproducible: $([ $repro = 1 ] && echo yes || echo "no (max rel. diff $(tsvdiff "$D/plain.tsv" "$D/plain2.tsv"))")"
    if cmp -s "$D/plain.tsv" "$D/nccl1.tsv" && cmp -s "$D/plain/model.safetensors" "$D/nccl1/model.safetensors"; then
        echo "PASS: --gpus 1 --nccl gives the plain run's loss table and model, bit for bit"
        pass=1
    else
        d=$(tsvdiff "$D/plain.tsv" "$D/nccl1.tsv")
        echo "loss tables differ: max relative difference $d"
        diff "$D/plain.tsv" "$D/nccl1.tsv" | head -n 8
        if [ $repro = 0 ] && awk -v d="$d" 'BEGIN { exit !(d <= 1e-5) }'; then
            echo "PASS (at 1e-5 relative: the plain run itself is not bitwise reproducible)"
            pass=1
        else
            echo "FAIL"
        fi
    fi
    tail -n 2 "$D/nccl1.tsv"
else
    echo "FAIL: a run failed"; tail -n 5 "$D"/*.log
fi

echo "== (c) 2 ranks on one GPU (MD_DIST_DEVICES=0,0; expected to fail: duplicate GPU)"
t0=$SECONDS
rc=0
MD_DIST_DEVICES=0,0 NCCL_DEBUG=WARN timeout 90 "$BIN" pretrain -o "$D/two" "${ARGS[@]}" --steps 4 --gpus 2 "$LAMBDA" \
    > "$D/two.log" 2>&1 || rc=$?
echo "rc=$rc in $((SECONDS - t0)) s (124: the launcher hung)"
grep -iE 'duplicate|WARN|rank [0-9] of 2|ncclCommInitRank|stopped' "$D/two.log" | head -n 12
[ -d "$D/two" ] && ls "$D/two"
exit $((1 - pass))
