# dist.sh: `mamba-dna pretrain --gpus N` on a machine without GPUs: option errors (--gpus 0,
# --gpus 2 -d cpu, --nccl -d cpu, a bad MD_DIST_DEVICES), --gpus 2 in a build without CUDA
# ("built without CUDA") or in a CUDA build without a device (the launcher names the failing
# rank, stops the other and exits 3 within seconds), --gpus 1 without --nccl being the plain
# run, and bad inputs or options leaving no OUTDIR behind (issue 8).
. "$(dirname "$0")/lib.bash"
LAMBDA=$ROOT/tests/data/real/lambda.fa.gz
[ -r "$LAMBDA" ] || { echo "skip: dist.sh: $LAMBDA missing"; exit 0; }
TINY=(--variant ps --d-model 16 --n-layer 1 --seq-len 64 --batch 2 --steps 2 -t 1 --no-progress)

# --- option errors: exit 1, the message, and no output folder
while IFS='|' read -r want args text; do
    [ -z "$want" ] && continue
    eval "set -- $args"
    run "$want" "$BIN" pretrain -o "$T/u" "${TINY[@]}" "$@" "$LAMBDA"
    has "$T/err" "$text"
    [ ! -e "$T/u" ] || fail "$T/u created by a failing run: $args"
done <<TABLE
1|--gpus 0|--gpus: 0 is out of range (1..64)
1|--gpus 65|--gpus: 65 is out of range
1|--gpus two|--gpus: 'two' is not an integer
1|--gpus 2 -d cpu|not -d cpu
1|--gpus 1 --nccl -d cpu|not -d cpu
TABLE

# --- --gpus 2 here: built without CUDA (exit 1), or no CUDA device (exit 3, the rank named)
rc=0
timeout 60 "$BIN" pretrain -o "$T/g2" "${TINY[@]}" --gpus 2 "$LAMBDA" >"$T/out" 2>"$T/err" || rc=$?
NCHECK=$((NCHECK + 1))
case $rc in
1) has "$T/err" "built without CUDA"
   cuda=0 ;;
3) has "$T/err" "rank 0 of 2 (CUDA device 0"
   has "$T/err" "would use CUDA device 0 but this machine has 0"
   cuda=1 ;;
0) echo "# --gpus 2 trained: this machine has GPUs and NCCL" >&2
   [ -s "$T/g2/train.tsv" ] || fail "--gpus 2 succeeded without train.tsv"
   cuda=2 ;;
*) fail "--gpus 2: exit $rc (124: it hung)" ;;
esac
[ "$cuda" = 2 ] || [ ! -e "$T/g2" ] || fail "--gpus 2 failed but created $T/g2"
if [ "$cuda" = 1 ]; then
    # a malformed device map is a usage error before any rank starts
    MD_DIST_DEVICES=0 run 1 "$BIN" pretrain -o "$T/u" "${TINY[@]}" --gpus 2 "$LAMBDA"
    has "$T/err" "MD_DIST_DEVICES='0': give 2 device numbers"
    # NCCL missing or present, --gpus 1 --nccl without a device fails cleanly, naming rank 0
    rc=0
    MD_NCCL_LIB=$T/no-such-libnccl.so timeout 60 "$BIN" pretrain -o "$T/n1" "${TINY[@]}" --gpus 1 --nccl "$LAMBDA" \
        >"$T/out" 2>"$T/err" || rc=$?
    NCHECK=$((NCHECK + 1))
    [ "$rc" = 3 ] || fail "--gpus 1 --nccl without a GPU: exit $rc"
    has "$T/err" "rank 0 of 1"
fi

# --- --gpus 1 (no --nccl) is the plain run: the same loss table as without the option
run 0 "$BIN" pretrain -o "$T/p1" "${TINY[@]}" -d cpu --gpus 1 "$LAMBDA"
run 0 "$BIN" pretrain -o "$T/p0" "${TINY[@]}" -d cpu "$LAMBDA"
cut -f1-8 "$T/p1/train.tsv" > "$T/p1.cut"
cut -f1-8 "$T/p0/train.tsv" > "$T/p0.cut"
NCHECK=$((NCHECK + 1))
cmp -s "$T/p1.cut" "$T/p0.cut" || fail "--gpus 1 changed the run"
has "$T/p1/train_args.json" '"ranks": 1'

# --- issue 8: bad inputs or options create no output folder
while IFS='|' read -r want args text; do
    [ -z "$want" ] && continue
    eval "set -- $args"
    run "$want" "$BIN" pretrain -o "$T/x/y" "${TINY[@]}" -d cpu "$@"
    has "$T/err" "$text"
    [ ! -e "$T/x" ] || fail "$T/x created by a failing run: $args"
done <<TABLE
2|$T/missing.fa|cannot open
2|--holdout chrZ:1-100 $LAMBDA|no held-out region overlaps
2|--seq-len 100000 $LAMBDA|no training sequence is at least --seq-len
2|--train-regions $T/missing.bed $LAMBDA|missing.bed
2|--init-from $T/nomodel $LAMBDA|nomodel
1|--lr -1 $LAMBDA|--lr
2|--resume $LAMBDA|nothing to resume
TABLE
done_ok
