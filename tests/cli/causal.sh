# causal.sh: a causal Mamba LM (mamba_ssm layout, made here with random weights): info, predict
# rows are next-base predictions (row t sees bases <= t only), --rc handling for causal models.
. "$(dirname "$0")/lib.bash"
need_model
cd "$T"
py "
make_mamba(T + '/mamba')
s = read_fasta(CONF + '/ph_d128_n2/input_L1000.fa')[0][1][:300]
t = s[:150] + ('A' if s[150] != 'A' else 'C') + s[151:]
write_fasta(T + '/x.fa', [('x', s)])
write_fasta(T + '/y.fa', [('x', t)])
"
run 0 "$BIN" info "$T/mamba"
has "$T/out" "variant         Mamba"
has "$T/out" "bidirectional   no (causal)"
has "$T/out" "architecture    MambaLMHeadModel"

# predict: --rc defaults to none for a causal model; asking for average is a usage error
run 0 "$BIN" predict -m "$T/mamba" -o "$T/px.npy" "$T/x.fa"
run 0 "$BIN" predict -m "$T/mamba" -o "$T/py.npy" "$T/y.fa"
has "$T/px.npy.bed" "$(printf '\t+\t0\t300')"
py "
j = json.load(open(T + '/px.npy.json'))
assert j['options']['rc'] == 'none' and 'next base' in j['output']['values'], j
X = np.load(T + '/px.npy'); Y = np.load(T + '/py.npy')
assert X.shape == (300, 4) and np.isfinite(X).all() and np.abs(X.sum(1) - 1).max() < 1e-5
# base 150 changed: rows 0..149 (bases <= t < 150) are unchanged, row 150 on can change
assert np.abs(X[:150] - Y[:150]).max() < 1e-6, np.abs(X[:150] - Y[:150]).max()
assert np.abs(X[150:] - Y[150:]).max() > 1e-4
"
run 0 "$BIN" predict -m "$T/mamba" "$T/x.fa"
has "$T/out" "##note=causal model: the row at pos holds P(base pos+1 | bases <= pos)"
run 1 "$BIN" predict -m "$T/mamba" --rc average "$T/x.fa"
has "$T/err" "--rc average is not defined for predict with a causal Mamba model"
[ -s "$T/out" ] && fail "output on a usage error"

# embed: --rc average is post-hoc conjoining (forward + reverse-complement passes)
run 0 "$BIN" embed -m "$T/mamba" --pool none -o "$T/ex.npy" "$T/x.fa"
run 0 "$BIN" embed -m "$T/mamba" --pool none --raw -o "$T/rx.npy" "$T/x.fa"
py "
s = read_fasta(T + '/x.fa')[0][1]
write_fasta(T + '/xrc.fa', [('xrc', revcomp(s))])
"
run 0 "$BIN" embed -m "$T/mamba" --pool none --raw -o "$T/rxrc.npy" "$T/xrc.fa"
py "
E = np.load(T + '/ex.npy'); f = np.load(T + '/rx.npy'); r = np.load(T + '/rxrc.npy')
assert E.shape == (300, 16)
close(E, (f + r[::-1]) / 2, 1e-6, 'Mamba conjoined embedding')
"
done_ok
