# predict.sh: `mamba-dna predict`: raw logits against the conformance vectors, the probability
# output (text and .npy), token-level strand averaging in logit space, and its symmetry.
. "$(dirname "$0")/lib.bash"
need_model

PH=$CONF/ph_d128_n2
PS=$CONF/ps_d128_n3
fa=$PH/input_L1000.fa
cd "$T"

# --- conformance: --raw = masked-LM logits of the forward strand (padded vocabulary 16) -------
for m in ph_d128_n2 ps_d128_n3; do
    run 0 "$BIN" predict -m "$CONF/$m" --raw -o "$T/conf_$m.npy" "$CONF/$m/input_L1000.fa"
done
py "
for m in ('ph_d128_n2', 'ps_d128_n3'):
    a = np.load(T + '/conf_' + m + '.npy'); r = np.load(CONF + '/' + m + '/logits_L1000.npy')
    e = close(a, r, 1e-4, m)
    print('  logits', m, a.shape, 'relative error %.2e' % e)
    j = json.load(open(T + '/conf_' + m + '.npy.json'))
    assert j['command'] == 'predict' and j['output']['shape'] == [1000, 16], j['output']
    assert j['output']['columns'][:12] == ['[CLS]', '[SEP]', '[BOS]', '[MASK]', '[PAD]', '[RESERVED]', '[UNK]', 'A', 'C', 'G', 'T', 'N'], j['output']['columns']
"

# --- probabilities: text output --------------------------------------------------------------
py "
s = read_fasta('$fa')[0][1]
write_fasta(T + '/rc.fa', [('rc', revcomp(s))])
"
for m in ph_d128_n2 ps_d128_n3; do
    run 0 "$BIN" predict -m "$CONF/$m" --raw -o "$T/raw_$m.npy" "$fa"
    run 0 "$BIN" predict -m "$CONF/$m" --raw -o "$T/rawrc_$m.npy" "$T/rc.fa"
    run 0 "$BIN" predict -m "$CONF/$m" "$fa"
    cp "$T/out" "$T/p_$m.tsv"
    run 0 "$BIN" predict -m "$CONF/$m" -o "$T/p_$m.npy" "$fa"
    run 0 "$BIN" predict -m "$CONF/$m" -o "$T/prc_$m.npy" "$T/rc.fa"
    run 0 "$BIN" predict -m "$CONF/$m" --rc none -o "$T/pnone_$m.npy" "$fa"
done
has "$T/p_ph_d128_n2.tsv" "$(printf '#chrom\tpos\tref\tpA\tpC\tpG\tpT\tentropy')"
py "
s = read_fasta('$fa')[0][1]
A, C, G, T_ = 7, 8, 9, 10
B = [A, C, G, T_]
for m in ('ph_d128_n2', 'ps_d128_n3'):
    h, k, v = load_tsv(T + '/p_' + m + '.tsv')
    assert h == ['chrom', 'pos', 'ref', 'pA', 'pC', 'pG', 'pT', 'entropy'], h
    assert len(k) == 1000 and k[0][:2] == ('seq_L1000', '1') and k[-1][:2] == ('seq_L1000', '1000'), (k[0], k[-1])
    assert ''.join(x[2] for x in k) == s, 'ref column'
    p = v[:, :4]
    assert np.isfinite(v).all() and (p >= 0).all() and np.abs(p.sum(1) - 1).max() < 1e-5
    ent = -(p * np.log2(np.where(p > 0, p, 1))).sum(1)
    assert np.abs(ent - v[:, 4]).max() < 1e-5, 'entropy in bits'
    P = np.load(T + '/p_' + m + '.npy'); assert P.shape == (1000, 4) and P.dtype == np.float32
    close(P, p, 1e-6, m + ' text = npy')
    j = json.load(open(T + '/p_' + m + '.npy.json')); assert j['output']['columns'] == ['pA', 'pC', 'pG', 'pT']
    f = np.load(T + '/raw_' + m + '.npy'); r = np.load(T + '/rawrc_' + m + '.npy')
    # --rc none: softmax over the four bases of the forward logits
    close(np.load(T + '/pnone_' + m + '.npy'), softmax(f[:, B]), 1e-5, m + ' rc none')
    # --rc average: (logits(x)[l, v] + logits(rc x)[L-1-l, comp(v)]) / 2, then the softmax
    comp = [T_, G, C, A]
    want = softmax((f[:, B] + r[::-1][:, comp]) / 2)
    close(P, want, 1e-5, m + ' rc average')
    # strand symmetry: P(rc x)[L-1-l, comp(b)] = P(x)[l, b]
    Q = np.load(T + '/prc_' + m + '.npy')
    close(Q[::-1][:, ::-1], P, 1e-5, m + ' symmetry')
# PS is RC-equivariant: averaging changes nothing
close(np.load(T + '/p_ps_d128_n3.npy'), np.load(T + '/pnone_ps_d128_n3.npy'), 1e-6, 'PS average = forward')
"
has "$T/p_ph_d128_n2.npy.bed" "$(printf 'seq_L1000\t0\t1000\tseq_L1000\t0\t.\t0\t1000')"

# raw text: the vocabulary as column names
run 0 "$BIN" predict -m "$PH" --raw "$fa"
has "$T/out" "$(printf '#chrom\tpos\tref\t[CLS]\t[SEP]')"
has "$T/out" "$(printf '\tN\tid12\tid13\tid14\tid15')"
py "
h, k, v = load_tsv(T + '/out'); assert v.shape == (1000, 16)
close(v, np.load(T + '/raw_ph_d128_n2.npy'), 1e-6, 'raw text')
"

# windows and regions: positions are 1-based on the contig
cp "$fa" "$T/ref.fa"
samtools faidx "$T/ref.fa"
run 0 "$BIN" predict -m "$PH" -r seq_L1000:11-20 "$T/ref.fa"
py "
h, k, v = load_tsv(T + '/out')
s = read_fasta('$fa')[0][1]
assert [int(x[1]) for x in k] == list(range(11, 21)), k
assert ''.join(x[2] for x in k) == s[10:20]
"
run 0 "$BIN" predict -m "$PH" -w 400 -s 300 -o "$T/win.npy" "$fa"
py "assert [(b[1], b[2], b[6], b[7]) for b in load_bed(T + '/win.npy.bed')] == [(0, 400, 0, 400), (300, 700, 400, 400), (600, 1000, 800, 400)]"

# soft-masked bases keep their case in the ref column
printf '>low\nACGTacgtNn\n' >"$T/low.fa"
run 0 "$BIN" predict -m "$PS" "$T/low.fa"
py "
h, k, v = load_tsv(T + '/out'); assert ''.join(x[2] for x in k) == 'ACGTacgtNn', k
"

done_ok
