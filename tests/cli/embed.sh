# embed.sh: `mamba-dna embed` against the conformance vectors of the original implementation, and
# the output contract: .npy + BED + JSON sidecars, TSV, row order, windows, strand combining,
# pooling, --layer, --half, regions, FASTQ and BAM input.
. "$(dirname "$0")/lib.bash"
need_model

PH=$CONF/ph_d128_n2
PS=$CONF/ps_d128_n3
fa=$PH/input_L1000.fa
cd "$T"

# --- conformance: last_hidden_state of the forward strand, relative error <= 1e-4 -------------
for m in ph_d128_n2 ps_d128_n3; do
    run 0 "$BIN" embed -m "$CONF/$m" --raw --pool none -w 0 -o "$T/conf_$m.npy" "$CONF/$m/input_L1000.fa"
    [ -s "$T/err" ] && fail "embed wrote to stderr without -v: $(cat "$T/err")"
    [ -s "$T/out" ] && fail "embed wrote to stdout with -o"
    # the rest of the tests run both models on the Ph input
    run 0 "$BIN" embed -m "$CONF/$m" --raw --pool none -o "$T/raw_$m.npy" "$fa"
done
py "
for m in ('ph_d128_n2', 'ps_d128_n3'):
    a = np.load(T + '/conf_' + m + '.npy'); r = np.load(CONF + '/' + m + '/hidden_L1000.npy')
    assert a.dtype == np.float32, a.dtype
    e = close(a, r, 1e-4, m)
    print('  hidden', m, a.shape, 'relative error %.2e' % e)
"

# --- sidecars ----------------------------------------------------------------------------------
[ "$(cat "$T/conf_ph_d128_n2.npy.bed")" = "$(printf 'seq_L1000\t0\t1000\tseq_L1000\t0\t+\t0\t1000')" ] ||
    fail "BED sidecar: $(cat "$T/conf_ph_d128_n2.npy.bed")"
py "
j = json.load(open(T + '/conf_ps_d128_n3.npy.json'))
assert j['program'] == 'mamba-dna' and j['command'] == 'embed', j
assert j['output']['shape'] == [1000, 256] and j['output']['dtype'] == 'float32', j['output']
assert j['output']['file'] == 'conf_ps_d128_n3.npy' and j['output']['index'] == 'conf_ps_d128_n3.npy.bed'
assert j['model']['variant'] == 'Caduceus-PS' and j['model']['hidden_width'] == 256
import hashlib
assert j['model']['sha256'] == hashlib.sha256(open(CONF + '/ps_d128_n3/model.safetensors', 'rb').read()).hexdigest()
assert j['options']['raw'] is True and j['options']['pool'] == 'none' and j['options']['window'] == 0
assert 'embed' in j['command_line'] and '--raw' in j['command_line'], j['command_line']
assert j['inputs'] == ['$PS/input_L1000.fa'], j['inputs']
"
ls -a "$T" | grep -q '\.tmp\.' && fail "temporary files left: $(ls -a "$T")"

# --- TSV on stdout equals the npy ------------------------------------------------------------
run 0 "$BIN" embed -m "$PS" --raw --pool none "$fa"
cp "$T/out" "$T/raw_ps.tsv"
has "$T/raw_ps.tsv" "##mamba-dna_command=mamba-dna embed"
has "$T/raw_ps.tsv" "$(printf '#name\tstart\tend\te0\te1\t')"
py "
h, k, v = load_tsv(T + '/raw_ps.tsv')
assert len(h) == 3 + 256 and v.shape == (1000, 256), (len(h), v.shape)
assert k[0] == ('seq_L1000', '0', '1') and k[999] == ('seq_L1000', '999', '1000'), (k[0], k[999])
close(v, np.load(T + '/raw_ps_d128_n3.npy'), 1e-6, 'tsv vs npy')
"
# -o FILE (not .npy) writes TSV to that file, atomically, no sidecars
run 0 "$BIN" embed -m "$PH" -o "$T/pooled.tsv" "$fa"
lines "$T/pooled.tsv" 5
has "$T/pooled.tsv" "$(printf 'seq_L1000\t0\t1000\t')"
[ -e "$T/pooled.tsv.bed" ] && fail "TSV output got a BED sidecar"

# --- strand combining ------------------------------------------------------------------------
py "
recs = read_fasta('$fa'); s = recs[0][1]
write_fasta(T + '/rc.fa', [('seq_L1000_rc', revcomp(s))])
"
for m in ph_d128_n2 ps_d128_n3; do
    run 0 "$BIN" embed -m "$CONF/$m" --raw --pool none -o "$T/rawrc_$m.npy" "$T/rc.fa"
    run 0 "$BIN" embed -m "$CONF/$m" --pool none -o "$T/avg_$m.npy" "$fa"
    run 0 "$BIN" embed -m "$CONF/$m" --pool none -o "$T/avgrc_$m.npy" "$T/rc.fa"
    run 0 "$BIN" embed -m "$CONF/$m" --pool none --rc none -o "$T/none_$m.npy" "$fa"
    run 0 "$BIN" embed -m "$CONF/$m" -o "$T/mean_$m.npy" "$fa"
    run 0 "$BIN" embed -m "$CONF/$m" -o "$T/meanrc_$m.npy" "$T/rc.fa"
done
has "$T/avg_ph_d128_n2.npy.bed" "$(printf '\t0\t.\t0\t1000')"
py "
D = 128
# Ph: forward and reverse-complement passes averaged position by position
f = np.load(T + '/raw_ph_d128_n2.npy'); r = np.load(T + '/rawrc_ph_d128_n2.npy')
a = np.load(T + '/avg_ph_d128_n2.npy')
close(a, (f + r[::-1]) / 2, 1e-6, 'Ph average')
close(np.load(T + '/none_ph_d128_n2.npy'), f, 1e-7, 'Ph rc none')
# PS: (h[:, :D] + h[:, D:][:, ::-1]) / 2 of one pass; rc none = the first half
h = np.load(T + '/raw_ps_d128_n3.npy')
a = np.load(T + '/avg_ps_d128_n3.npy')
assert a.shape == (1000, D), a.shape
close(a, (h[:, :D] + h[:, D:][:, ::-1]) / 2, 1e-6, 'PS average')
close(np.load(T + '/none_ps_d128_n3.npy'), h[:, :D], 1e-7, 'PS rc none')
# PS equivariance of the raw state: h(rc x)[L-1-l] = flip over channels of h(x)[l]
close(np.load(T + '/rawrc_ps_d128_n3.npy')[::-1, ::-1], h, 1e-5, 'PS RC equivariance')
for m in ('ph_d128_n2', 'ps_d128_n3'):
    a = np.load(T + '/avg_' + m + '.npy'); b = np.load(T + '/avgrc_' + m + '.npy')
    # strand-averaged embeddings are RC-invariant: emb(rc x) = emb(x) read backwards
    close(b, a[::-1], 1e-5, m + ' rc symmetry per base')
    mean = np.load(T + '/mean_' + m + '.npy')
    assert mean.shape == (1, D), mean.shape
    close(mean[0], a.mean(axis=0), 1e-5, m + ' pool mean = mean of per-base rows')
    close(np.load(T + '/meanrc_' + m + '.npy'), mean, 1e-5, m + ' rc symmetry pooled')
"

# --- many records: row order, batching and thread count do not change the output -------------
py "
s = read_fasta('$fa')[0][1]
recs = [('r%d' % i, s[o:o + n]) for i, (o, n) in enumerate(
    [(0, 1), (5, 2), (10, 3), (20, 4), (0, 1000), (100, 37), (300, 250), (7, 5), (900, 100), (1, 999)])]
recs.append(('lower', s[200:260].lower()))
write_fasta(T + '/multi.fa', recs)
for name, seq in recs:
    write_fasta(T + '/one_' + name + '.fa', [(name, seq)])
print('  %d records' % len(recs))
"
for m in ph_d128_n2 ps_d128_n3; do
    run 0 "$BIN" embed -m "$CONF/$m" --pool none -o "$T/multi_a.npy" "$T/multi.fa"
    # --batch-tokens 1: every window in a forward call of its own
    run 0 "$BIN" embed -m "$CONF/$m" --pool none --batch-tokens 1 -t 1 -o "$T/multi_b.npy" "$T/multi.fa"
    run 0 "$BIN" embed -m "$CONF/$m" --pool none --batch-tokens 1500 -t 2 -o "$T/multi_c.npy" "$T/multi.fa"
    cmp -s "$T/multi_a.npy.bed" "$T/multi_b.npy.bed" || fail "BED differs with --batch-tokens"
    cmp -s "$T/multi_a.npy.bed" "$T/multi_c.npy.bed" || fail "BED differs with -t"
    run 0 "$BIN" embed -m "$CONF/$m" -o "$T/multi_mean.npy" "$T/multi.fa"
    for n in r0 r5 lower; do
        run 0 "$BIN" embed -m "$CONF/$m" --pool none -o "$T/one_$n.npy" "$T/one_$n.fa"
    done
    py "
bed = load_bed(T + '/multi_a.npy.bed')
recs = read_fasta(T + '/multi.fa')
assert [b[0] for b in bed] == [r[0] for r in recs], bed
row = 0
for b, (name, seq) in zip(bed, recs):
    assert b[1:3] == (0, len(seq)) and b[3] == name and b[6] == row and b[7] == len(seq), b
    row += len(seq)
A = np.load(T + '/multi_a.npy'); assert A.shape[0] == row
for other in ('b', 'c'):
    close(np.load(T + '/multi_' + other + '.npy'), A, 1e-5, '$m batch/threads ' + other)
for b in bed:
    if b[0] not in ('r0', 'r5', 'lower'): continue
    one = np.load(T + '/one_' + b[0] + '.npy')
    close(A[b[6]:b[6] + b[7]], one, 1e-5, '$m record ' + b[0])
M = np.load(T + '/multi_mean.npy')
assert M.shape == (len(recs), 128)
for i, b in enumerate(bed):
    close(M[i], A[b[6]:b[6] + b[7]].mean(axis=0), 1e-5, '$m mean ' + b[0])
assert np.isfinite(A).all()
"
done

# --- windows -----------------------------------------------------------------------------------
# W=300, S=200 over 1000 bases: starts 0, 200, 400, 600, then the last window ends at 1000 (700)
run 0 "$BIN" embed -m "$PH" -w 300 -s 200 -o "$T/win.npy" "$fa"
run 0 "$BIN" embed -m "$PH" -w 300 -s 200 --pool none -o "$T/winb.npy" "$fa"
py "
bed = load_bed(T + '/win.npy.bed')
assert [(b[1], b[2], b[6], b[7]) for b in bed] == [(0, 300, 0, 1), (200, 500, 1, 1), (400, 700, 2, 1), (600, 900, 3, 1), (700, 1000, 4, 1)], bed
bed = load_bed(T + '/winb.npy.bed')
assert [(b[1], b[2], b[6], b[7]) for b in bed] == [(s, s + 300, 300 * i, 300) for i, s in enumerate((0, 200, 400, 600, 700))], bed
s = read_fasta('$fa')[0][1]
write_fasta(T + '/w200.fa', [('w', s[200:500])])
"
run 0 "$BIN" embed -m "$PH" --pool none -o "$T/w200.npy" "$T/w200.fa"
py "
close(np.load(T + '/winb.npy')[300:600], np.load(T + '/w200.npy'), 1e-5, 'window 2 = its subsequence')
W = np.load(T + '/win.npy'); assert W.shape == (5, 128)
close(W[1], np.load(T + '/w200.npy').mean(axis=0), 1e-5, 'pooled window')
"
# default stride = window; a window longer than the record is the whole record
run 0 "$BIN" embed -m "$PH" -w 400 -o "$T/w400.npy" "$fa"
py "assert [(b[1], b[2]) for b in load_bed(T + '/w400.npy.bed')] == [(0, 400), (400, 800), (600, 1000)]"
run 0 "$BIN" embed -m "$PH" -w 5000 -o "$T/w5000.npy" "$fa"
py "
assert [(b[1], b[2]) for b in load_bed(T + '/w5000.npy.bed')] == [(0, 1000)]
close(np.load(T + '/w5000.npy'), np.load(T + '/mean_ph_d128_n2.npy'), 1e-6, 'W > L is the whole record')
"

# --- --layer: 0 is the embedding layer (E[ids]; PS: [E[ids] | flip(E[comp(ids)])]) ----------
run 0 "$BIN" embed -m "$PH" --layer 0 --raw --pool none -o "$T/l0_ph.npy" "$fa"
run 0 "$BIN" embed -m "$PS" --layer 0 --raw --pool none -o "$T/l0_ps.npy" "$fa"
run 0 "$BIN" embed -m "$PH" --layer 1 --raw --pool none -o "$T/l1_ph.npy" "$fa"
run 1 "$BIN" embed -m "$PH" --layer 2 "$fa"
has "$T/err" "--layer 2 is out of range for this model (0..1"
py "
ids = np.load(CONF + '/ph_d128_n2/ids_L1000.npy').astype(np.int64)
comp = np.array([0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11, 12, 13, 14, 15])
for m, f in (('ph_d128_n2', 'l0_ph'), ('ps_d128_n3', 'l0_ps')):
    st = load_safetensors(CONF + '/' + m + '/model.safetensors')
    E = [v for k, v in st.items() if k.endswith('embeddings.word_embeddings.weight') or k.endswith('embedding.weight')][0]
    E = np.vstack([E, np.zeros((16 - E.shape[0], E.shape[1]), E.dtype)]) if E.shape[0] < 16 else E
    want = E[ids] if m.startswith('ph') else np.hstack([E[ids], E[comp[ids]][:, ::-1]])
    close(np.load(T + '/' + f + '.npy'), want, 1e-7, m + ' layer 0')
l1 = np.load(T + '/l1_ph.npy'); assert np.isfinite(l1).all() and relerr(l1, np.load(T + '/l0_ph.npy')) > 1e-2
"

# --- --half ------------------------------------------------------------------------------------
run 0 "$BIN" embed -m "$PS" --half --pool none -o "$T/half.npy" "$fa"
py "
h = np.load(T + '/half.npy'); assert h.dtype == np.float16 and h.shape == (1000, 128), (h.dtype, h.shape)
close(h, np.load(T + '/avg_ps_d128_n3.npy'), 1e-3, 'float16')
assert json.load(open(T + '/half.npy.json'))['output']['dtype'] == 'float16'
"

# --- FASTQ and gzip input ----------------------------------------------------------------------
py "
recs = read_fasta(T + '/multi.fa')
with open(T + '/multi.fq', 'w') as f:
    for n, s in recs: f.write('@%s extra words\n%s\n+\n%s\n' % (n, s, 'I' * len(s)))
"
gzip -c "$T/multi.fq" >"$T/multi.fq.gz"
run 0 "$BIN" embed -m "$PH" --pool none -o "$T/fq.npy" "$T/multi.fq.gz"
run 0 "$BIN" embed -m "$PH" --pool none -o "$T/fa.npy" "$T/multi.fa"
cmp -s "$T/fq.npy.bed" "$T/fa.npy.bed" || fail "FASTQ and FASTA give different BED"
py "close(np.load(T + '/fq.npy'), np.load(T + '/fa.npy'), 1e-6, 'FASTQ = FASTA')"
# stdin
run 0 "$BIN" embed -m "$PH" -o "$T/stdin.npy" - <"$fa"
py "close(np.load(T + '/stdin.npy'), np.load(T + '/mean_ph_d128_n2.npy'), 1e-6, 'stdin')"

# --- regions of an indexed FASTA ---------------------------------------------------------------
cp "$fa" "$T/ref.fa"
samtools faidx "$T/ref.fa"
printf 'seq_L1000\t200\t500\nseq_L1000\t0\t50\n' >"$T/regions.bed"
run 0 "$BIN" embed -m "$PH" --pool none -r seq_L1000:201-500 -o "$T/reg.npy" "$T/ref.fa"
[ "$(cat "$T/reg.npy.bed")" = "$(printf 'seq_L1000\t200\t500\tseq_L1000:201-500\t0\t.\t0\t300')" ] ||
    fail "region BED: $(cat "$T/reg.npy.bed")"
py "close(np.load(T + '/reg.npy'), np.load(T + '/w200.npy'), 1e-5, 'region = subsequence')"
run 0 "$BIN" embed -m "$PH" -R "$T/regions.bed" -o "$T/regs.tsv" "$T/ref.fa"
py "
h, k, v = load_tsv(T + '/regs.tsv')
assert k == [('seq_L1000', '200', '500'), ('seq_L1000', '0', '50')], k
close(v[0], np.load(T + '/w200.npy').mean(axis=0), 1e-5, 'BED region pooled')
"
run 0 "$BIN" embed -m "$PH" -r seq_L1000:901-1000 -r seq_L1000:1-10 "$T/ref.fa"
py "
h, k, v = load_tsv(T + '/out')
assert k == [('seq_L1000', '900', '1000'), ('seq_L1000', '0', '10')], k
"

# --- BAM input: one row per read, same as the reads' sequences as FASTA ---------------------
bam=$ROOT/tests/data/seq/reads.bam
samtools fasta -F 0xF00 "$bam" >"$T/reads.fa" 2>/dev/null
run 0 "$BIN" embed -m "$PH" --pool none -o "$T/bam.npy" "$bam"
run 0 "$BIN" embed -m "$PH" --pool none -o "$T/bamfa.npy" "$T/reads.fa"
py "
b1 = load_bed(T + '/bam.npy.bed'); b2 = load_bed(T + '/bamfa.npy.bed')
assert [x[0] for x in b1] == [x[0] for x in b2], (b1, b2)
assert len(b1) >= 3, b1
close(np.load(T + '/bam.npy'), np.load(T + '/bamfa.npy'), 1e-6, 'BAM = samtools fasta')
"
# CRAM with --reference gives the same rows
run 0 "$BIN" embed -m "$PH" --pool none -T "$ROOT/tests/data/seq/ref.fa" -o "$T/cram.npy" "$ROOT/tests/data/seq/reads.cram"
cmp -s "$T/cram.npy.bed" "$T/bam.npy.bed" || fail "CRAM and BAM give different BED"
py "close(np.load(T + '/cram.npy'), np.load(T + '/bam.npy'), 1e-6, 'CRAM = BAM')"
# -F 0 keeps secondary/supplementary/dup/qcfail reads too: more rows
run 0 "$BIN" embed -m "$PH" -F 0 -o "$T/bamall.npy" "$bam"
py "assert len(load_bed(T + '/bamall.npy.bed')) > len(load_bed(T + '/bam.npy.bed'))"
run 0 "$BIN" embed -m "$PH" --min-len 15 -o "$T/bamlong.npy" "$bam"
py "assert all(b[2] >= 15 for b in load_bed(T + '/bamlong.npy.bed'))"

# -v: the run summary
run 0 "$BIN" embed -v -m "$PH" -o "$T/v.npy" "$fa"
has "$T/err" "[M::main] Version:"
has "$T/err" "[M::main] CMD: mamba-dna embed -v"
has "$T/err" "Real time:"
has "$T/err" "Peak RSS:"
has "$T/err" "1 records"

done_ok
