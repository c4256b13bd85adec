# badinput.sh: bad or unusual input (issue 3 §6): tiny records, all-N, empty and unknown regions,
# no usable reads, broken model folders, missing/empty/invalid input, unwritable output. Each is a
# documented result or a one-line error with exit 2; a failed run leaves no output files.
. "$(dirname "$0")/lib.bash"
need_model

PH=$CONF/ph_d128_n2
PS=$CONF/ps_d128_n3
fa=$PH/input_L1000.fa
cd "$T"

# --- records shorter than the conv kernel (d_conv 4) and all-N sequences: finite output --------
printf '>one\nA\n>two\nCG\n>three\nTTA\n>n50\n%s\n>n1\nN\n>mixed\nNNNNACGTNNNN\n' "$(printf 'N%.0s' $(seq 50))" >"$T/tiny.fa"
for m in ph_d128_n2 ps_d128_n3; do
    run 0 "$BIN" embed -m "$CONF/$m" --pool none -o "$T/tiny_$m.npy" "$T/tiny.fa"
    run 0 "$BIN" embed -m "$CONF/$m" -o "$T/tinym_$m.npy" "$T/tiny.fa"
    run 0 "$BIN" embed -m "$CONF/$m" --n-as-pad -o "$T/tinypad_$m.npy" "$T/tiny.fa"
    run 0 "$BIN" predict -m "$CONF/$m" -o "$T/tinyp_$m.npy" "$T/tiny.fa"
    run 0 "$BIN" predict -m "$CONF/$m" "$T/tiny.fa"
    cp "$T/out" "$T/tinyp_$m.tsv"
done
py "
for m in ('ph_d128_n2', 'ps_d128_n3'):
    a = np.load(T + '/tiny_' + m + '.npy'); assert a.shape == (1 + 2 + 3 + 50 + 1 + 12, 128), a.shape
    b = np.load(T + '/tinym_' + m + '.npy'); assert b.shape == (6, 128)
    c = np.load(T + '/tinypad_' + m + '.npy'); assert c.shape == (6, 128)
    p = np.load(T + '/tinyp_' + m + '.npy'); assert p.shape == (69, 4)
    for x in (a, b, c, p):
        assert np.isfinite(x).all(), m
    assert np.abs(p.sum(1) - 1).max() < 1e-5
    # N as [PAD] changes the all-N records, not the ACGT-only ones
    assert np.abs(c[:3] - b[:3]).max() < 1e-6 and np.abs(c[3] - b[3]).max() > 1e-4
    h, k, v = load_tsv(T + '/tinyp_' + m + '.tsv')
    assert np.isfinite(v).all() and len(k) == 69
    assert [x[0] for x in load_bed(T + '/tiny_' + m + '.npy.bed')] == ['one', 'two', 'three', 'n50', 'n1', 'mixed']
"
has "$T/tinyp_ph_d128_n2.tsv" "$(printf 'one\t1\tA\t')"
hasnt "$T/tinyp_ph_d128_n2.tsv" "nan"
# a window longer than a record: the whole record (same rows as -w 0)
run 0 "$BIN" embed -m "$PH" -w 100 -o "$T/tinyw.npy" "$T/tiny.fa"
cmp -s "$T/tinyw.npy.bed" "$T/tinym_ph_d128_n2.npy.bed" || fail "-w longer than the records"

# --- regions -----------------------------------------------------------------------------------
cp "$fa" "$T/ref.fa"
samtools faidx "$T/ref.fa"
run 2 "$BIN" embed -m "$PH" -r seq_L1000:500-400 "$T/ref.fa"
has "$T/err" "seq_L1000:500-400"
has "$T/err" "empty"
[ -s "$T/out" ] && fail "stdout not empty after an input error"
printf 'seq_L1000\t10\t10\n' >"$T/empty.bed"
run 2 "$BIN" embed -m "$PH" -R "$T/empty.bed" "$T/ref.fa"
has "$T/err" "empty"
run 2 "$BIN" predict -m "$PH" -r Seq_L1000:1-10 "$T/ref.fa"
has "$T/err" "unknown contig 'Seq_L1000'"
has "$T/err" "seq_L1000"
run 2 "$BIN" embed -m "$PH" -r seq_L1000:2000-3000 "$T/ref.fa"
has "$T/err" "seq_L1000:2000-3000"
# a region past the end is clamped (with a warning), not an error
run 0 "$BIN" embed -m "$PH" -r seq_L1000:901-2000 -o "$T/clamp.npy" "$T/ref.fa"
has "$T/clamp.npy.bed" "$(printf 'seq_L1000\t900\t1000\t')"
# regions need an index, which is never created for the user
cp "$fa" "$T/noidx.fa"
run 2 "$BIN" embed -m "$PH" -r seq_L1000:1-10 "$T/noidx.fa"
has "$T/err" "samtools faidx"
[ -e "$T/noidx.fa.fai" ] && fail "an index was written next to the input"

# --- reads -------------------------------------------------------------------------------------
printf '@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:100\nsec\t256\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tIIII\ndup\t1024\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tIIII\nnoseq\t0\tchr1\t1\t60\t4M\t*\t0\t0\t*\t*\n' >"$T/nouse.sam"
samtools view -b -o "$T/nouse.bam" "$T/nouse.sam"
run 2 "$BIN" embed -m "$PH" -o "$T/nouse.npy" "$T/nouse.bam"
has "$T/err" "no usable reads (3 skipped: 2 by flag filters, 0 shorter than the minimum length, 1 without a stored sequence)"
[ -e "$T/nouse.npy" ] && fail "output left after 'no usable reads'"
run 2 "$BIN" predict -m "$PH" --min-len 1000 "$ROOT/tests/data/seq/reads.bam"
has "$T/err" "no usable reads"
has "$T/err" "shorter than the minimum length"
[ -s "$T/out" ] && fail "stdout not empty"
run 0 "$BIN" embed -m "$PH" -F 0 -o "$T/nouse_all.npy" "$T/nouse.bam"
py "assert [b[0] for b in load_bed(T + '/nouse_all.npy.bed')] == ['sec', 'dup'], load_bed(T + '/nouse_all.npy.bed')"

# --- model folders -----------------------------------------------------------------------------
mkdir -p "$T/nocfg"
cp "$PH/model.safetensors" "$T/nocfg/"
run 2 "$BIN" embed -m "$T/nocfg" "$fa"
has "$T/err" "$T/nocfg/config.json"
lines "$T/err" 1
run 2 "$BIN" predict -m "$T/missing_model" "$fa"
has "$T/err" "$T/missing_model"
mkdir -p "$T/noweights"
cp "$PH/config.json" "$T/noweights/"
run 2 "$BIN" embed -m "$T/noweights" "$fa"
has "$T/err" "model.safetensors"
run 2 "$BIN" embed -m "$fa" "$fa"
has "$T/err" "is not a folder"

# --- inputs ------------------------------------------------------------------------------------
run 2 "$BIN" embed -m "$PH" "$T/nothere.fa"
has "$T/err" "cannot open '$T/nothere.fa': No such file or directory"
: >"$T/empty.fa"
run 2 "$BIN" embed -m "$PH" "$T/empty.fa"
has "$T/err" "empty"
run 2 "$BIN" embed -m "$PH" "$PH/config.json"
has "$T/err" "not a FASTA, FASTQ, SAM, BAM or CRAM file"
printf '>x\nACGJT\n' >"$T/badbase.fa"
run 2 "$BIN" predict -m "$PH" "$T/badbase.fa"
has "$T/err" "record 'x' position 4: invalid base 'J'"

# --- a failed run leaves nothing under the final names (nor temporary files) -----------------
for o in out.npy out.tsv; do
    mkdir -p "$T/fail"
    run 2 "$BIN" embed -m "$PH" -o "$T/fail/$o" "$fa" "$T/badbase.fa"
    [ -z "$(ls -A "$T/fail")" ] || fail "files left after a failed run: $(ls -A "$T/fail")"
done
# an existing output is not touched by a failed run
run 0 "$BIN" embed -m "$PH" -o "$T/fail/keep.npy" "$fa"
cp "$T/fail/keep.npy" "$T/keep.copy"
run 2 "$BIN" embed -m "$PH" -o "$T/fail/keep.npy" "$T/badbase.fa"
cmp -s "$T/fail/keep.npy" "$T/keep.copy" || fail "a failed run changed an existing output"
[ "$(ls -A "$T/fail" | tr '\n' ' ')" = "keep.npy keep.npy.bed keep.npy.json " ] || fail "left: $(ls -A "$T/fail")"
# unwritable outputs
run 2 "$BIN" embed -m "$PH" -o "$T/no/such/dir/x.npy" "$fa"
has "$T/err" "$T/no/such/dir/x.npy"
if [ -w /dev/full ]; then
    run 2 bash -c "'$BIN' embed -m '$PH' --pool none '$fa' >/dev/full"
    has "$T/err" "write error"
fi

done_ok
