# pretrain.sh: `mamba-dna pretrain`: usage errors (table), a short PS run on lambda phage with a
# held-out region (files, TSV columns, loadable Hugging Face checkpoint usable by predict),
# resume after kill -9 giving the same loss curve as an uninterrupted run, option mismatch on
# resume, a NaN loss keeping the last checkpoint, and the loss-curve PNG.
. "$(dirname "$0")/lib.bash"
LAMBDA=$ROOT/tests/data/real/lambda.fa.gz
[ -r "$LAMBDA" ] || { echo "skip: pretrain.sh: $LAMBDA missing"; exit 0; }
HOLD='gi|9626243|ref|NC_001416.1|:40001-48502'
SMALL=(--variant ps --d-model 16 --n-layer 2 --seq-len 128 --batch 2 --grad-accum 2 --lr 4e-3 --val-windows 8 -t 1 -d cpu --no-progress)

# --- usage errors: expected exit, arguments, text in stderr
while IFS='|' read -r want args text; do
    [ -z "$want" ] && continue
    eval "set -- $args"
    run "$want" "$BIN" pretrain "$@"
    has "$T/err" "$text"
done <<TABLE
1|-o $T/u1|no input
1|$LAMBDA|no output folder
1|-o $T/u1 --variant xl $LAMBDA|--variant: 'xl' is not one of ph, ps, mamba
1|-o $T/u1 --lr abc $LAMBDA|--lr: 'abc' is not a number
1|-o $T/u1 --steps 0 $LAMBDA|--steps
1|-o $T/u1 --seq-len 4 $LAMBDA|--seq-len
1|-o $T/u1 --rc-aug maybe $LAMBDA|--rc-aug
1|-o $T/u1 --lr-min 1 --lr 0.1 $LAMBDA|--lr-min
1|-o $T/u1 -m $T $LAMBDA|--init-from
1|-o $T/u1 --bogus $LAMBDA|bogus
2|-o $T/u1 $T/missing.fa|cannot open
2|-o $T/u2 --holdout chrZ:1-100 --steps 2 --seq-len 64 $LAMBDA|no held-out region overlaps
2|-o $T/u3 --seq-len 100000 --steps 2 $LAMBDA|no training sequence is at least --seq-len
2|-o $T/u4 --resume $LAMBDA|nothing to resume
TABLE
run 0 "$BIN" pretrain -h
has "$T/out" "Usage: mamba-dna pretrain"
has "$T/out" "--holdout"

# --- a short run
run 0 "$BIN" pretrain -o "$T/a" "${SMALL[@]}" --steps 24 --val-every 4 --save-every 6 --holdout "$HOLD" "$LAMBDA"
for f in config.json model.safetensors train_state.bin train_args.json train.tsv; do [ -s "$T/a/$f" ] || fail "$f missing"; done
ls "$T/a" | grep -q tmp && fail "temporary files left in $T/a"
has "$T/a/train.tsv" "step	tokens	lr	train_loss	train_acc	val_loss	val_acc	grad_norm	elapsed_s"
lines "$T/a/train.tsv" 26
has "$T/a/config.json" '"rcps": true'
has "$T/a/config.json" '"d_model": 16'
run 0 "$BIN" info "$T/a"
has "$T/out" "Caduceus-PS"
printf '>s\nACGTACGTTTGACCAGTACGATCGATCGTAGCTAGCTAGCTAGTCGATCGAT\n' > "$T/s.fa"
run 0 "$BIN" predict -m "$T/a" -d cpu --no-progress "$T/s.fa"
has "$T/out" "pA"

# --- kill -9 during the run, resume: same losses as the uninterrupted run
"$BIN" pretrain -o "$T/b" "${SMALL[@]}" --steps 24 --val-every 4 --save-every 2 --holdout "$HOLD" "$LAMBDA" 2>"$T/kill.err" &
pid=$!
for i in $(seq 1 600); do
    [ -s "$T/b/train_state.bin" ] && [ "$(tail -n1 "$T/b/train.tsv" 2>/dev/null | cut -f1)" -ge 3 ] 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[ -s "$T/b/train_state.bin" ] || fail "no checkpoint before the kill"
killed_at=$(tail -n1 "$T/b/train.tsv" | cut -f1)
[ "$killed_at" -lt 24 ] || fail "the run ended before kill -9 (at update $killed_at)"
NCHECK=$((NCHECK + 1))
run 0 "$BIN" pretrain -o "$T/b" "${SMALL[@]}" --steps 24 --val-every 4 --save-every 2 --holdout "$HOLD" "$LAMBDA" --resume
echo "# killed at update $killed_at, resumed to 24" >&2
cut -f1-8 "$T/a/train.tsv" > "$T/a.cut"
cut -f1-8 "$T/b/train.tsv" > "$T/b.cut"
cmp -s "$T/a.cut" "$T/b.cut" || { diff "$T/a.cut" "$T/b.cut" >&2; fail "resumed loss curve differs"; }
NCHECK=$((NCHECK + 1))
cmp -s "$T/a/model.safetensors" "$T/b/model.safetensors" || fail "resumed model differs"

# --- resume with different options; fresh start over a run
run 2 "$BIN" pretrain -o "$T/b" "${SMALL[@]}" --steps 24 --lr 1e-3 --holdout "$HOLD" "$LAMBDA" --resume
has "$T/err" "option 'lr'"
run 2 "$BIN" pretrain -o "$T/b" "${SMALL[@]}" --steps 24 --holdout "$HOLD" "$LAMBDA"
has "$T/err" "already holds a training run"

# --- a NaN loss stops, keeping the last checkpoint
run 3 "$BIN" pretrain -o "$T/c" "${SMALL[@]}" --steps 8 --save-every 2 --debug-nan-at 3 "$LAMBDA"
has "$T/err" "non-finite training loss"
has "$T/err" "last checkpoint (update 2)"
[ "$(tail -n1 "$T/c/train.tsv" | cut -f1)" = 2 ] || fail "log continues past the NaN"

# --- causal Mamba and Ph (RC augmentation) run too
run 0 "$BIN" pretrain -o "$T/d" --variant mamba --d-model 16 --n-layer 1 --seq-len 64 --batch 2 --steps 3 -t 1 -d cpu --no-progress "$LAMBDA"
has "$T/d/config.json" '"model_type": "mamba"'
run 0 "$BIN" pretrain -o "$T/e" --variant ph --d-model 16 --n-layer 1 --seq-len 64 --batch 2 --steps 3 -t 1 -d cpu "$LAMBDA"
has "$T/err" "update 3/3"

# --- the recomputing plan gives the same run
run 0 "$BIN" pretrain -o "$T/h" "${SMALL[@]}" --steps 24 --val-every 4 --save-every 6 --holdout "$HOLD" --recompute-scan "$LAMBDA"
cut -f1-5 "$T/h/train.tsv" > "$T/h.cut"
cut -f1-5 "$T/a/train.tsv" > "$T/a5.cut"
cmp -s "$T/a5.cut" "$T/h.cut" || { diff "$T/a5.cut" "$T/h.cut" >&2; fail "--recompute-scan changed the losses"; }
NCHECK=$((NCHECK + 1))

# --- continue from an existing model folder (Hugging Face layout)
run 0 "$BIN" pretrain -o "$T/f" --init-from "$CONF/ph_d128_n2" --seq-len 64 --batch 1 --steps 2 -t 1 -d cpu --no-progress "$LAMBDA"
has "$T/f/config.json" '"d_model": 128'
has "$T/f/config.json" '"n_layer": 2'

# --- -d cuda trains where a GPU and its backward ops exist; otherwise a clear error (exit 2)
rc=0
"$BIN" pretrain -o "$T/g" -d cuda --d-model 16 --n-layer 1 --seq-len 64 --batch 1 --steps 1 --no-progress "$LAMBDA" \
    >"$T/out" 2>"$T/err" || rc=$?
NCHECK=$((NCHECK + 1))
case $rc in
0) ;;
2) has "$T/err" "CUDA" ;;
*) fail "-d cuda: exit $rc" ;;
esac

# --- the loss-curve PNG (gnuplot)
if command -v gnuplot >/dev/null 2>&1; then
    run 0 sh "$ROOT/bench/plot_loss.sh" "$T/a/train.tsv" "$T/loss.png"
    head -c 8 "$T/loss.png" | od -An -c | grep -q "P   N   G" || fail "not a PNG"
    NCHECK=$((NCHECK + 1))
fi
done_ok
