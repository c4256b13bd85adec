# heldout.sh: bench/heldout_eval (held-out masked-position evaluation). Checks, on small fixtures:
#  - baselines: every Markov (k 0..12) and symmetric (k 1..6) CE, accuracy and chosen alpha equal a
#    by-hand count model in Python (contexts cut at N, record ends and held-out regions when
#    fitting; clean context with backoff when scoring), on a synthetic FASTA with N runs,
#    lower case, two records and overlapping held-out regions;
#  - positions: the same set for every window size (and another set for another seed), all inside
#    the held-out regions, non-N, about mask-frac of the bases;
#  - model: CE and accuracy equal a by-hand computation from `mamba-dna predict` on the region
#    with the selected positions replaced by N (heldout_eval --mask-with-n), over windows whose
#    last one overlaps: PS from --raw logits (full vocabulary and A/C/G/T), Ph with strand
#    averaging from the probability output;
#  - errors: no --holdout, a region on a contig missing from the input.
# heldout_eval is taken from $HELDOUT_EVAL, else BUILD/bench/heldout_eval next to the binary
# (built with make when missing).
. "$(dirname "$0")/lib.bash"
need_model

BUILD=$(dirname "$BIN")
HE=${HELDOUT_EVAL:-$BUILD/bench/heldout_eval}
if [ ! -x "$HE" ]; then
    make -C "$ROOT" BUILD="$BUILD" "$HE" >"$T/make.log" 2>&1 || { cat "$T/make.log" >&2; fail "cannot build $HE"; }
fi
PH=$CONF/ph_d128_n2
PS=$CONF/ps_d128_n3
FA=$ROOT/tests/data/real/chr20_1M.fa.gz

# --- baselines against a by-hand count model ------------------------------------------------
py "
rng = np.random.default_rng(7)
def seq(n):
    # a Markov-ish sequence so that contexts matter
    s, prev = [], 0
    P = np.array([[.5,.2,.2,.1],[.1,.5,.1,.3],[.3,.1,.4,.2],[.2,.2,.1,.5]])
    for i in range(n):
        prev = rng.choice(4, p=P[prev]); s.append('ACGT'[prev])
    return ''.join(s)
a = list(seq(4000))
for b, e in ((500, 530), (2990, 2995), (3600, 3601)):   # N runs (one inside a held-out region)
    a[b:e] = 'N' * (e - b)
for i in range(1200, 1400): a[i] = a[i].lower()
a[1999] = 'R'                                             # IUPAC: an N to the reader
b = list(seq(1800)); b[0:3] = 'NNN'
write_fasta(T + '/syn.fa', [('chrA', ''.join(a)), ('chrB', ''.join(b))])
"
HOLD="--holdout chrA:2801-3300 --holdout chrA:3201-3500 --holdout chrB:1-300 --holdout chrB:1701-1800"
run 0 "$HE" $HOLD --mask-frac 0.3 --seed 5 --alpha 0.01,0.5,2 --positions "$T/syn_pos.tsv" -o "$T/syn.tsv" "$T/syn.fa"
has "$T/err" "evaluation positions"
py "
import math
recs = dict(read_fasta(T + '/syn.fa'))
hold = {'chrA': [(2800, 3500)], 'chrB': [(0, 300), (1700, 1800)]}
inhold = lambda c, i: any(b <= i < e for b, e in hold[c])
IDX = {'A': 0, 'C': 1, 'G': 2, 'T': 3}
base = lambda ch: IDX.get(ch.upper(), -1)
# fitting: training bases outside the held-out regions; a context may not contain N or held-out bases
mk, sy = {}, {}
for c, s in recs.items():
    ok = [base(ch) >= 0 and not inhold(c, i) for i, ch in enumerate(s)]
    for i, ch in enumerate(s):
        if not ok[i]: continue
        x = base(ch)
        for k in range(13):
            if i - k < 0 or not all(ok[i - k:i]): break
            key = (k, s[i - k:i].upper()); mk.setdefault(key, [0] * 4)[x] += 1
        for k in range(1, 7):
            if i - k < 0 or i + k >= len(s) or not all(ok[i - k:i]) or not all(ok[i + 1:i + k + 1]): break
            key = (k, s[i - k:i].upper(), s[i + 1:i + k + 1].upper()); sy.setdefault(key, [0] * 4)[x] += 1
# positions from heldout_eval, checked against the sequence
pos = [l.rstrip('\n').split('\t') for l in open(T + '/syn_pos.tsv') if not l.startswith('#')]
pos = [(c, int(p) - 1, r) for c, p, r, *rest in pos]
for c, i, r in pos:
    assert inhold(c, i) and recs[c][i].upper() == r and base(r) >= 0, (c, i, r)
assert len(set(pos)) == len(pos)
nvalid = sum(1 for c in hold for b, e in hold[c] for i in range(b, e) if base(recs[c][i]) >= 0)
assert abs(len(pos) / nvalid - 0.3) < 0.05, (len(pos), nvalid)
# scoring: clean context from the record; cut by N or a record end -> back off to what is there
def run_len(s, i, step, kmax):
    n = 0
    while n < kmax and 0 <= i + step * (n + 1) < len(s) and base(s[i + step * (n + 1)]) >= 0: n += 1
    return n
alphas = [0.01, 0.5, 2.0]
got = {}
for l in open(T + '/syn.tsv'):
    if l.startswith('#'): continue
    f = l.rstrip('\n').split('\t'); got[(f[0], f[1])] = f
def score(fam, k):
    ce = np.zeros(len(alphas)); acc = 0
    for c, i, r in pos:
        s = recs[c]; x = base(r)
        lr = run_len(s, i, -1, 12); rr = run_len(s, i, 1, 6)
        if fam == 'markov':
            m = min(k, lr); row = mk.get((m, s[i - m:i].upper()), [0] * 4)
        else:
            m = min(k, lr, rr)
            row = mk.get((0, ''), [0] * 4) if m == 0 else sy.get((m, s[i - m:i].upper(), s[i + 1:i + m + 1].upper()), [0] * 4)
        tot = sum(row)
        ce -= np.log((row[x] + np.array(alphas)) / (tot + 4 * np.array(alphas)))
        acc += int(np.argmax(row)) == x
    j = int(np.argmin(ce))
    return ce[j] / len(pos), acc / len(pos), alphas[j]
best = {}
for fam, ks in (('markov', range(13)), ('sym', range(1, 7))):
    for k in ks:
        ce, acc, al = score(fam, k)
        f = got[(fam, str(k))]
        assert int(f[3]) == len(pos), f
        assert abs(float(f[4]) - ce) < 1e-5 * max(1, ce) and abs(float(f[6]) - acc) < 1e-6 and float(f[2]) == al, (fam, k, f, ce, acc, al)
        assert abs(float(f[5]) - ce / math.log(2)) < 1e-5
        if fam not in best or ce < best[fam][0]: best[fam] = (ce, k)
for fam in best:
    f = got[('best_' + fam, str(best[fam][1]))]
    assert abs(float(f[4]) - best[fam][0]) < 1e-5, f
print('  baselines: %d positions, markov k=%d CE %.4f, sym k=%d CE %.4f (by hand)' % (len(pos), best['markov'][1], best['markov'][0], best['sym'][1], best['sym'][0]))
"

# --- positions: independent of the window size, changed by the seed ------------------------
R1=20:40001-42500
for w in 1000 700; do
    run 0 "$HE" -m "$PS" -d cpu -t 1 -w $w --holdout $R1 --markov-max 4 --sym-max 2 --positions "$T/pos_w$w.tsv" -o "$T/res_w$w.tsv" "$FA"
done
run 0 "$HE" --holdout $R1 --seed 9 --markov-max 4 --sym-max 2 --positions "$T/pos_s9.tsv" -o "$T/res_s9.tsv" "$FA"
py "
cols = lambda p: [tuple(l.split('\t')[:3]) for l in open(p) if not l.startswith('#')]
a, b, c = cols(T + '/pos_w1000.tsv'), cols(T + '/pos_w700.tsv'), cols(T + '/pos_s9.tsv')
assert a == b and len(a) > 250, (len(a), len(b))
assert a != c and abs(len(a) - len(c)) < 150, (len(a), len(c))
base = lambda p: [l for l in open(p) if l.startswith('markov') or l.startswith('sym')]
assert base(T + '/res_w1000.tsv') == base(T + '/res_w700.tsv')
"

# --- model: by hand from mamba-dna predict on the region with the positions replaced by N ------
# region of 2500 bases in windows of 1000: [0,1000) [1000,2000) [1500,2500); a position is
# scored in the first window that covers it
py "
import gzip
s = ''.join(l.strip() for l in gzip.open('$FA', 'rt') if not l.startswith('>'))
pos = [int(l.split('\t')[1]) - 1 for l in open(T + '/pos_w1000.tsv') if not l.startswith('#')]
r = list(s[40000:42500])
for p in pos: r[p - 40000] = 'N'
write_fasta(T + '/masked.fa', [('r', ''.join(r))])
"
run 0 "$BIN" predict -m "$PS" -d cpu -t 1 -w 1000 --raw -o "$T/ps_raw.npy" "$T/masked.fa"
run 0 "$HE" -m "$PS" -d cpu -t 1 -w 1000 --mask-with-n --holdout $R1 --markov-max 2 --sym-max 1 --positions "$T/ps_pos.tsv" -o "$T/ps.tsv" "$FA"
run 0 "$BIN" predict -m "$PH" -d cpu -t 1 -w 1000 -o "$T/ph_p.npy" "$T/masked.fa"
run 0 "$HE" -m "$PH" -d cpu -t 1 -w 1000 --mask-with-n --holdout $R1 --markov-max 2 --sym-max 1 --positions "$T/ph_pos.tsv" -o "$T/ph.tsv" "$FA"
py "
def rows_of(npy):
    bed = load_bed(npy + '.bed'); X = np.load(npy).astype(np.float64)
    assert [(b[1], b[2]) for b in bed] == [(0, 1000), (1000, 2000), (1500, 2500)], bed
    def row(t):   # first window covering t
        w = next(j for j, b in enumerate(bed) if b[1] <= t < b[2])
        return X[bed[w][6] + t - bed[w][1]]
    return row
def model_row(path):
    f = [l.rstrip('\n').split('\t') for l in open(path) if l.startswith('model\t')][0]
    return int(f[3]), float(f[4]), float(f[6]), float(f[7]), float(f[8])
pos = [l.rstrip('\n').split('\t') for l in open(T + '/ps_pos.tsv') if not l.startswith('#')]
B = [7, 8, 9, 10]
# PS: logits of the forward strand (one pass; the model is equivariant)
row = rows_of(T + '/ps_raw.npy')
lpf, lp4, cf, c4 = [], [], 0, 0
for c, p, ref, *rest in pos:
    lg = row(int(p) - 1 - 40000); x = 'ACGT'.index(ref)
    lse = np.log(np.exp(lg - lg.max()).sum()) + lg.max()
    l4 = lg[B]; lse4 = np.log(np.exp(l4 - l4.max()).sum()) + l4.max()
    lpf.append(lg[B[x]] - lse); lp4.append(l4[x] - lse4)
    cf += int(np.argmax(lg)) == B[x]; c4 += int(np.argmax(l4)) == x
n, ce4, acc4, cef, accf = model_row(T + '/ps.tsv')
assert n == len(pos)
assert abs(ce4 + np.mean(lp4)) < 1e-5 and abs(cef + np.mean(lpf)) < 1e-5, (ce4, -np.mean(lp4), cef, -np.mean(lpf))
assert abs(acc4 - c4 / n) < 1e-6 and abs(accf - cf / n) < 1e-6, (acc4, c4 / n, accf, cf / n)
close([float(q[3]) for q in pos], lp4, 1e-5, 'PS per-position log p (ACGT)')
close([float(q[4]) for q in pos], lpf, 1e-5, 'PS per-position log p (full)')
# Ph: predict's strand-averaged probabilities over A/C/G/T
row = rows_of(T + '/ph_p.npy')
lp = [np.log(row(int(p) - 1 - 40000)['ACGT'.index(ref)]) for c, p, ref, *rest in pos]
acc = np.mean([int(np.argmax(row(int(p) - 1 - 40000))) == 'ACGT'.index(ref) for c, p, ref, *rest in pos])
n, ce4, acc4, cef, accf = model_row(T + '/ph.tsv')
assert abs(ce4 + np.mean(lp)) < 1e-5 and abs(acc4 - acc) < 1e-6, (ce4, -np.mean(lp), acc4, acc)
print('  model: PS CE %.5f (full %.5f), Ph CE %.5f on %d positions, by hand from predict' % (-np.mean(lp4), -np.mean(lpf), -np.mean(lp), n))
"
# the model row comes first and a margin row closes the table; [MASK] differs from N
run 0 "$HE" -m "$PS" -d cpu -t 1 -w 1000 --holdout $R1 --markov-max 2 --sym-max 1 -o "$T/psm.tsv" "$FA"
py "
rows = [l.split('\t') for l in open(T + '/psm.tsv') if not l.startswith('#')]
assert rows[0][0] == 'model' and rows[-1][0] == 'margin', (rows[0][0], rows[-1][0])
best = min(float(r[4]) for r in rows if r[0] in ('best_markov', 'best_sym'))
assert abs(float(rows[-1][4]) - (float(rows[0][4]) - best)) < 2e-6
nm = [l.split('\t') for l in open(T + '/ps.tsv') if l.startswith('model')][0]
assert nm[4] != rows[0][4]
"

# --- errors ---------------------------------------------------------------------------------
run 1 "$HE" "$FA"
has "$T/err" "no --holdout"
run 2 "$HE" --holdout chr7:1-100 "$FA"
has "$T/err" "chr7:1-100 is in no input record"
run 1 "$HE" --holdout 20:1-100 --mask-frac 0 "$FA"
done_ok
