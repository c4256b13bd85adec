# faults.sh: fault injection (issue 8 item 3). Outputs on a full disk (a 32 kB tmpfs when root
# may mount one, and `ulimit -f` with SIGXFSZ ignored, so writes fail with EFBIG), SIGTERM and
# SIGKILL mid-write and mid-training, inputs that end early (a FIFO whose writer stops half-way).
# After each, the final output path holds a complete valid file or does not exist;
# `pretrain --resume` finishes a killed run; exit codes: 1 usage, 2 input/data, 3 internal/device.
. "$(dirname "$0")/lib.bash"
need_model
command -v samtools >/dev/null && command -v mkfifo >/dev/null || { echo "skip: faults.sh: samtools/mkfifo missing"; exit 0; }
PH=$CONF/ph_d128_n2
fa=$PH/input_L1000.fa
cd "$T"

# no file under a final name (temporary *.tmp.* names may stay after a kill, never final ones)
no_final() { for f in "$@"; do NCHECK=$((NCHECK + 1)); [ ! -e "$f" ] || fail "$f exists after a failed run"; done; }
no_files() { NCHECK=$((NCHECK + 1)); [ -z "$(ls -A "$1")" ] || fail "files left in $1: $(ls -A "$1")"; }
# a .npy that numpy loads whole, with its .bed sidecar covering every row
npy_ok() {
    py "a = np.load('$1'); b = load_bed('$1.bed'); assert a.ndim == 2 and a.shape[0] == sum(int(x[7]) for x in b), (a.shape, len(b))"
}

zcat "$ROOT/tests/data/real/lambda.fa.gz" >"$T/lambda.fa"
cp "$fa" "$T/ref.fa"
samtools faidx "$T/ref.fa"
TINY=(--variant ph --d-model 8 --n-layer 1 --d-state 4 --seq-len 64 --batch 2 -d cpu -t 1 --no-progress)

# --- full disk ---------------------------------------------------------------------------------
full_disk_checks() { # $1: a folder where writes fail after a few kB
    local d=$1
    run 2 "$BIN" embed -m "$PH" --pool none -t 1 -o "$d/e.npy" "$fa"
    has "$T/err" "$d/e.npy"
    no_final "$d/e.npy" "$d/e.npy.bed" "$d/e.npy.json"
    run 2 "$BIN" predict -m "$PH" -t 1 -o "$d/p.tsv" "$fa"
    has "$T/err" "$d/p.tsv"
    no_final "$d/p.tsv"
    run 2 "$BIN" embed -m "$PH" --pool none -t 1 -o "$d/h.npy" --half "$fa"
    no_final "$d/h.npy"
    no_files "$d"
}
mkdir -p "$T/full"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=32k tmpfs "$T/full" 2>/dev/null; then
    trap 'umount "$T/full" 2>/dev/null; rm -rf "$T"' EXIT
    full_disk_checks "$T/full"
    has "$T/err" "No space left on device"
    # pretrain: a checkpoint write fails; what is under a final name is whole (renamed into
    # place only when complete), so the model either loads or is absent
    run 2 "$BIN" pretrain -o "$T/full/pt" "${TINY[@]}" --steps 2 "$fa"
    has "$T/err" "No space left on device"
    [ ! -e "$T/full/pt/model.safetensors" ] || run 0 "$BIN" info --no-sha256 "$T/full/pt"
    [ ! -e "$T/full/pt/train_state.bin" ] || [ -s "$T/full/pt/train_state.bin" ] || fail "empty train_state.bin"
    ls "$T/full/pt" | grep -q '\.tmp\.' && fail "temporary files left: $(ls "$T/full/pt")"
    rm -rf "$T/full/pt"
    umount "$T/full"
    trap 'rm -rf "$T"' EXIT
else
    echo "note: faults.sh: no tmpfs (not root or no mount); full disk tested with ulimit -f only"
fi
# ulimit -f 16 (16 blocks of 1 kB in bash): writes past it fail with EFBIG when SIGXFSZ is ignored
mkdir -p "$T/fsz"
run 2 bash -c "trap '' XFSZ; ulimit -f 16; '$BIN' embed -m '$PH' --pool none -t 1 -o '$T/fsz/e.npy' '$fa'"
has "$T/err" "File too large"
no_files "$T/fsz"
# (stderr through a pipe: the limit would stop the messages written to a file too; no leak
# check: htslib's bgzf_close returns early without freeing when its final flush fails)
run 2 env ASAN_OPTIONS=detect_leaks=0 bash -c "set -o pipefail; { trap '' XFSZ; ulimit -f 0; exec '$BIN' score -m '$PH' -w 64 -t 1 --all-snvs -r seq_L1000:1-40 -f '$T/ref.fa' --tsv '$T/fsz/s.tsv.gz'; } 2>&1 >/dev/null | cat >&2"
has "$T/err" "s.tsv.gz"
no_files "$T/fsz"
# standard output on a full device
run 2 bash -c "'$BIN' predict -m '$PH' -t 1 '$fa' >/dev/full"

[ -z "${VERBOSE:-}" ] || echo "section at ${SECONDS}s"
# --- SIGTERM / SIGKILL mid-write ------------------------------------------------------------------
# waits (up to 60 s) until a temporary output exists, then sends the signal
kill_when_writing() { # $1 signal, $2 output path, rest: command
    local sig=$1 out=$2; shift 2
    "$@" >/dev/null 2>"$T/kerr" &
    local pid=$! i
    for i in $(seq 1 600); do
        ls "$out".tmp.* >/dev/null 2>&1 && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    kill -"$sig" $pid 2>/dev/null || true
    { wait $pid; } 2>/dev/null || true
    [ -z "${VERBOSE:-}" ] || echo "  $sig $(basename "$out"): $([ -e "$out" ] && echo finished || echo killed) at ${SECONDS}s"
}
for sig in TERM KILL; do
    mkdir -p "$T/k$sig"
    o=$T/k$sig/e.npy
    kill_when_writing $sig "$o" "$BIN" embed -m "$PH" --pool none -t 1 --no-progress -o "$o" "$T/lambda.fa"
    if [ -e "$o" ]; then npy_ok "$o"; else no_final "$o" "$o.bed" "$o.json"; fi
    o=$T/k$sig/p.tsv
    kill_when_writing $sig "$o" "$BIN" predict -m "$PH" -t 1 --no-progress -o "$o" "$T/lambda.fa"
    if [ -e "$o" ]; then lines "$o" 48503; else no_final "$o"; fi
done

[ -z "${VERBOSE:-}" ] || echo "section at ${SECONDS}s"
# --- SIGKILL mid-training, then --resume -------------------------------------------------------
P=(pretrain -o "$T/pt" "${TINY[@]}" --steps 12 --save-every 3 --val-every 0 --holdout gi:1-2000)
sed '1s/^>.*/>gi/' "$T/lambda.fa" >"$T/lam.fa"
"$BIN" "${P[@]}" "$T/lam.fa" >/dev/null 2>"$T/kerr" &
pid=$!
for i in $(seq 1 600); do
    [ -e "$T/pt/train_state.bin" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
kill -KILL $pid 2>/dev/null || true
{ wait $pid; } 2>/dev/null || true
[ -e "$T/pt/train_state.bin" ] || fail "no checkpoint before the kill: $(cat "$T/kerr")"
# what the kill left under final names loads
run 0 "$BIN" info --no-sha256 "$T/pt"
run 0 "$BIN" "${P[@]}" --resume "$T/lam.fa"
run 0 "$BIN" info --no-sha256 "$T/pt"
py "
rows = [l.split('\t') for l in open(T + '/pt/train.tsv') if l.strip() and not l.startswith('#')]
steps = [int(r[0]) for r in rows[1:]]
assert steps[-1] == 12, steps
"
# SIGTERM mid-training: the same guarantee
"$BIN" pretrain -o "$T/pt2" "${TINY[@]}" --steps 12 --save-every 3 --val-every 0 "$T/lam.fa" >/dev/null 2>&1 &
pid=$!
sleep 1
kill -TERM $pid 2>/dev/null || true
{ wait $pid; } 2>/dev/null || true
for f in model.safetensors config.json; do
    [ ! -e "$T/pt2/$f" ] || [ -s "$T/pt2/$f" ] || fail "empty $f after SIGTERM"
done
[ ! -e "$T/pt2/model.safetensors" ] || run 0 "$BIN" info --no-sha256 "$T/pt2"

[ -z "${VERBOSE:-}" ] || echo "section at ${SECONDS}s"
# --- inputs that end early (a FIFO whose writer stops half-way) --------------------------------
gzip -c "$fa" >"$T/in.fa.gz"
half=$(( $(stat -c %s "$T/in.fa.gz") / 2 ))
mkfifo "$T/fifo"
mkdir -p "$T/ff"
(head -c $half "$T/in.fa.gz" >"$T/fifo") &
run 2 "$BIN" embed -m "$PH" -o "$T/ff/e.npy" "$T/fifo"
has "$T/err" "fifo"
wait
no_files "$T/ff"
samtools view -b -o "$T/r.bam" "$ROOT/tests/data/seq/reads.sam"
(head -c 300 "$T/r.bam" >"$T/fifo") &
run 2 "$BIN" predict -m "$PH" -o "$T/ff/p.tsv" "$T/fifo"
wait
no_files "$T/ff"
# the same through standard input
run 2 bash -c "head -c $half '$T/in.fa.gz' | '$BIN' embed -m '$PH' -o '$T/ff/s.npy' -"
has "$T/err" "truncated or corrupt"
no_files "$T/ff"

[ -z "${VERBOSE:-}" ] || echo "section at ${SECONDS}s"
# --- exit codes: 1 usage, 2 input/data, 3 internal/device ---------------------------------------
run 1 "$BIN" embed --no-such-option "$fa"
run 1 "$BIN" score -m "$PH" -f "$T/ref.fa" --batch-size 0 "$T/x.vcf"
run 2 "$BIN" embed -m "$PH" "$T/nothere.fa"
run 2 "$BIN" info "$T/nothere"
run 3 "$BIN" pretrain -o "$T/nan" "${TINY[@]}" --steps 4 --debug-nan-at 2 "$fa"
# a device that cannot be opened is a device error (only where CUDA is unusable)
rc=0
"$BIN" embed -m "$PH" -d cuda -o "$T/cu.npy" "$fa" >/dev/null 2>"$T/err" || rc=$?
NCHECK=$((NCHECK + 1))
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail "-d cuda without a usable GPU: exit $rc (expected 3)"
[ "$rc" -eq 0 ] || no_final "$T/cu.npy"

done_ok
