# score.sh: `mamba-dna score` end to end on the real chr20 fixture (1000 Genomes records + GRCh37
# slice) plus crafted edge cases: output validates with pysam and bcftools, records come out
# unchanged and in order, INFO values round-trip (VCF, BCF, the TSV, bcftools annotate -a),
# unscorable ALTs get '.', multi-allelic records, contig ends, stdin/stdout, --write-index, REF
# mismatch (stop / skip / flag, nothing left under the output name), a contig missing from the
# reference (with a hint), --all-snvs tables, options and usage errors.
. "$(dirname "$0")/lib.bash"
need_model
command -v bcftools >/dev/null && command -v tabix >/dev/null || { echo "skip: score.sh: bcftools/tabix missing"; exit 0; }
$PY -c 'import pysam' 2>/dev/null || { echo "skip: score.sh: python3 pysam missing"; exit 0; }

R=$ROOT/tests/data/real
FA=$R/chr20_1M.fa.gz
PH=$CONF/ph_d128_n2
S="$BIN score -m $PH -f $FA -w 64 -t 1 --no-progress"

# --- input: real records of 20:1-8000 plus edge cases at the first and last base, multi-allelic,
# symbolic, '*', breakend, missing ALT, MNV, N and IUPAC ALTs, an indel
$PY - "$R/chr20_1M.sites.vcf.gz" "$FA" "$T/in.vcf" <<'EOF'
import sys, pysam
src, fa, out = sys.argv[1:]
ref = pysam.FastaFile(fa)
seq = ref.fetch('20')
vin = pysam.VariantFile(src)
hdr = str(vin.header)
recs = []
for r in vin.fetch('20', 0, 8000):
    f = str(r).rstrip('\n').split('\t')
    recs.append((r.pos, f))
def rec(pos, ref_, alt, rid='.'):
    return (pos, ['20', str(pos), rid, ref_, alt, '.', '.', 'EDGE=1'])
b = lambda p: seq[p - 1]
alt = lambda c: {'A': 'G', 'C': 'T', 'G': 'A', 'T': 'C'}[c]
L = len(seq)
recs += [rec(1, b(1), alt(b(1)), 'first'),
         rec(2, b(2), alt(b(2)) + ',<DEL>,*', 'multi'),
         rec(3000, b(3000), 'G]20:5000]' if b(3000) == 'G' else b(3000) + '[20:5000[', 'bnd'),
         rec(3100, b(3100), '.', 'noalt'),
         rec(3200, seq[3199:3202], alt(b(3200)) + b(3201) + alt(b(3202)), 'mnv'),
         rec(3300, b(3300), 'N,R,' + alt(b(3300)), 'nalt'),
         rec(3400, seq[3399:3403], b(3400), 'del'),
         rec(L, b(L), alt(b(L)), 'last')]
recs.sort(key=lambda x: x[0])
hdr = hdr.replace('#CHROM', '##INFO=<ID=EDGE,Number=1,Type=Integer,Description="crafted">\n#CHROM')
with open(out, 'w') as f:
    f.write(hdr)
    for _, x in recs:
        f.write('\t'.join(x) + '\n')
EOF
bgzip -f "$T/in.vcf" && tabix -f -p vcf "$T/in.vcf.gz"
NREC=$(bcftools view -H "$T/in.vcf.gz" | wc -l)
[ "$NREC" -gt 50 ] || fail "only $NREC input records"

# --- a VCF.gz with a table; BCF; VCF on stdout; stdin input; index
run 0 $S "$T/in.vcf.gz" -o "$T/out.vcf.gz" --tsv "$T/out.tsv.gz"
has "$T/err" "[M::score] $NREC records"
has "$T/err" "symbolic allele"
has "$T/err" "breakend"
[ -s "$T/out.tsv.gz.tbi" ] || fail "no tabix index for the table"
# the table gets the same permissions as the VCF (0666 & ~umask), not mkstemp's 0600
[ "$(stat -c %a "$T/out.tsv.gz")" = "$(stat -c %a "$T/out.vcf.gz")" ] ||
    fail "table mode $(stat -c %a "$T/out.tsv.gz") differs from the VCF's $(stat -c %a "$T/out.vcf.gz")"
run 0 bcftools view -H "$T/out.vcf.gz"
lines "$T/out" "$NREC"
run 0 $S "$T/in.vcf.gz" -O b -o "$T/out.bcf" --write-index
[ -s "$T/out.bcf.csi" ] || fail "--write-index made no .csi"
run 0 bcftools view -H -r 20:1-2000 "$T/out.bcf"
run 0 $S "$T/in.vcf.gz" -O v
cp "$T/out" "$T/stdout.vcf"
has "$T/stdout.vcf" "##mamba-dnaCommand=score"
run 0 bash -c "cat '$T/in.vcf.gz' | $S - -o '$T/stdin.vcf.gz' --write-index=tbi"
[ -s "$T/stdin.vcf.gz.tbi" ] || fail "--write-index=tbi made no .tbi"
ls "$T" | grep -q 'tmp' && fail "temporary files left: $(ls "$T")"

# --- records unchanged and in order (everything but the added INFO fields)
bcftools view -H "$T/in.vcf.gz" >"$T/a.txt"
bcftools annotate -x INFO/MAMBA_LLR,INFO/MAMBA_EMBDIST "$T/out.vcf.gz" | bcftools view -H >"$T/b.txt"
cmp -s "$T/a.txt" "$T/b.txt" || fail "records changed: $(diff "$T/a.txt" "$T/b.txt" | head -5)"
bcftools annotate -x INFO/MAMBA_LLR,INFO/MAMBA_EMBDIST "$T/out.bcf" | bcftools view -H >"$T/c.txt"
cmp -s "$T/a.txt" "$T/c.txt" || fail "BCF records changed"

# --- pysam: header, values, reasons, round trip VCF = BCF = stdout = stdin = TSV
py "
import pysam, math, gzip; pysam.set_verbosity(0)
def load(p):
    v = pysam.VariantFile(p)
    h = v.header.info
    for k in ('MAMBA_LLR', 'MAMBA_EMBDIST'):
        assert h[k].number == 'A' and h[k].type == 'Float', (k, h[k].number, h[k].type)
        d = h[k].description
        assert 'sha256 78c33d02ec583ef3' in d and 'window 64' in d and 'mode masked' in d, d
    return [(r.chrom, r.pos, r.id, r.ref, r.alts, r.info.get('MAMBA_LLR'), r.info.get('MAMBA_EMBDIST')) for r in v]
a = load(T + '/out.vcf.gz'); b = load(T + '/out.bcf'); c = load(T + '/stdout.vcf'); d = load(T + '/stdin.vcf.gz')
assert len(a) == $NREC and [x[:5] for x in a] == [x[:5] for x in b] == [x[:5] for x in c] == [x[:5] for x in d]
def same(x, y):
    for u, w in zip(x or (), y or ()):
        assert (u is None) == (w is None), (x, y)
        assert u is None or abs(u - w) <= 1e-5 * max(1, abs(u)), (x, y)
for ra, rb, rc in zip(a, b, c):
    for i in (5, 6):
        same(ra[i], rb[i]); same(ra[i], rc[i])
byid = {x[2]: x for x in a}
assert byid['first'][5][0] is not None and byid['last'][5][0] is not None
m = byid['multi']; assert m[5][0] is not None and m[5][1] is None and m[5][2] is None and m[6][1] is None, m
assert byid['bnd'][5] == (None,) and byid['bnd'][6] == (None,)
assert byid['noalt'][4] is None and byid['noalt'][5] is None
assert byid['mnv'][5][0] is not None
n = byid['nalt']; assert n[5][0] is None and n[6][0] is not None and n[5][1] is None and n[6][1] is None and n[5][2] is not None
dl = byid['del']; assert dl[5] == (None,) and dl[6][0] > 0
nsnv = sum(1 for x in a if x[4] and len(x[3]) == 1 and len(x[4][0]) == 1 and x[5][0] is not None)
assert nsnv > 40, nsnv
# the table: header, one row per scored ALT, values as in the VCF
rows = [l.rstrip('\n').split('\t') for l in gzip.open(T + '/out.tsv.gz', 'rt')]
assert rows[-len([r for r in rows if not r[0].startswith('#')]) - 1] == ['#Chrom', 'Pos', 'Ref', 'Alt', 'MAMBA_LLR', 'MAMBA_EMBDIST'], rows[:3]
tab = {(r[1], r[2], r[3]): r for r in rows if not r[0].startswith('#')}
nv = 0
for x in a:
    for i, alt in enumerate(x[4] or ()):
        k = (str(x[1]), x[3], alt)
        if x[5][i] is None and x[6][i] is None:
            assert k not in tab, k; continue
        r = tab[k]; nv += 1
        for j, col in ((5, 4), (6, 5)):
            assert (x[j][i] is None) == (r[col] == '.'), (k, r)
            if x[j][i] is not None: assert abs(float(r[col]) - x[j][i]) <= 1e-5 * max(1, abs(x[j][i])), (k, r, x)
assert nv == len(tab), (nv, len(tab))
"

# --- the table works with bcftools annotate -a (CADD-style lookup)
printf '##INFO=<ID=MAMBA_LLR,Number=A,Type=Float,Description="llr">\n##INFO=<ID=MAMBA_EMBDIST,Number=A,Type=Float,Description="d">\n' >"$T/hdr.txt"
run 0 bcftools annotate -a "$T/out.tsv.gz" -c CHROM,POS,REF,ALT,MAMBA_LLR,MAMBA_EMBDIST -h "$T/hdr.txt" -Oz -o "$T/ann.vcf.gz" "$T/in.vcf.gz"
run 0 tabix -p vcf "$T/ann.vcf.gz"
py "
import pysam; pysam.set_verbosity(0)
a = {(r.pos, r.ref, r.alts): r.info.get('MAMBA_LLR') for r in pysam.VariantFile(T + '/out.vcf.gz')}
b = {(r.pos, r.ref, r.alts): r.info.get('MAMBA_LLR') for r in pysam.VariantFile(T + '/ann.vcf.gz')}
n = 0
for k, v in a.items():
    if k[2] is None or len(k[2]) != 1 or v is None or v[0] is None: continue
    assert b[k] is not None and abs(b[k][0] - v[0]) <= 1e-5 * max(1, abs(v[0])), (k, v, b[k]); n += 1
assert n > 40, n
"

# --- REF mismatch: stops with the record and both alleles; nothing under the output name
zcat "$T/in.vcf.gz" | awk 'BEGIN{OFS="\t"} /^#/ {print; next} {n++} n==20 {w=$4; $4=($4=="A"?"C":"A"); print "#", $2, w > "/dev/stderr"} {print}' >"$T/mm.vcf" 2>"$T/mm.txt"
read -r _ MPOS MREF <"$T/mm.txt"
run 2 $S "$T/mm.vcf" -o "$T/mm.vcf.gz" --tsv "$T/mm.tsv.gz"
has "$T/err" "20:$MPOS"
has "$T/err" "does not match the reference '$MREF'"
has "$T/err" "--ref-mismatch"
[ -e "$T/mm.vcf.gz" ] || [ -e "$T/mm.tsv.gz" ] && fail "partial output left after an error"
ls "$T" | grep -q 'tmp' && fail "temporary files left after an error: $(ls "$T")"
run 0 $S "$T/mm.vcf" -o "$T/mm.vcf.gz" --ref-mismatch skip
has "$T/err" "1 records with a REF mismatch"
run 0 bash -c "bcftools view -H -i 'MAMBA_LLR=\".\"' '$T/mm.vcf.gz' | grep -c $'\t$MPOS\t'"
run 0 $S "$T/mm.vcf" -o "$T/mmf.vcf" --ref-mismatch flag
has "$T/mmf.vcf" "##INFO=<ID=MAMBA_REF_MISMATCH"
[ "$(grep -v '^#' "$T/mmf.vcf" | grep -c MAMBA_REF_MISMATCH)" -eq 1 ] || fail "flag not on exactly one record"

# --- a contig missing from the reference stops with a hint
echo "20 chr20" >"$T/chrs.txt"
bcftools annotate --rename-chrs "$T/chrs.txt" -Oz -o "$T/chr.vcf.gz" "$T/in.vcf.gz"
run 2 $S "$T/chr.vcf.gz" -o "$T/chr.out.vcf.gz"
has "$T/err" "contig 'chr20' is not in the reference"
has "$T/err" "'20'"
[ -e "$T/chr.out.vcf.gz" ] && fail "output left after a contig error"

# --- --all-snvs: 3 rows per position, tabix-indexed, values equal to scoring them as a VCF
run 0 $S --all-snvs -r 20:5001-5040 --tsv "$T/all.tsv.gz" --probs
has "$T/err" "[M::score] 40 positions, 120 ALT alleles"
[ "$(zcat "$T/all.tsv.gz" | grep -vc '^#')" -eq 120 ] || fail "--all-snvs: not 120 rows"
run 0 tabix "$T/all.tsv.gz" 20:5020-5020
lines "$T/out" 3
zcat "$T/all.tsv.gz" | grep '^#Chrom' | grep -q 'MAMBA_PREF	MAMBA_PALT' || fail "no probability columns"
{ zcat "$T/in.vcf.gz" | grep '^##' | grep -v '^##INFO=<ID=MAMBA'; printf '#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n';
  zcat "$T/all.tsv.gz" | awk '!/^#/ && $2 >= 5020 && $2 <= 5022 {print $1"\t"$2"\t.\t"$3"\t"$4"\t.\t.\t."}'; } >"$T/snv.vcf"
run 0 $S "$T/snv.vcf" -o "$T/snv.out.vcf" --probs
py "
import pysam, gzip; pysam.set_verbosity(0)
tab = {}
for l in gzip.open(T + '/all.tsv.gz', 'rt'):
    if l[0] != '#': r = l.split(); tab[(int(r[1]), r[3])] = [float(x) for x in r[4:8]]
n = 0
for r in pysam.VariantFile(T + '/snv.out.vcf'):
    t = tab[(r.pos, r.alts[0])]
    got = [r.info['MAMBA_LLR'][0], r.info['MAMBA_EMBDIST'][0], r.info['MAMBA_PREF'][0], r.info['MAMBA_PALT'][0]]
    for u, w in zip(got, t): assert abs(u - w) <= 1e-5 * max(1, abs(w)), (r.pos, got, t)
    n += 1
assert n == 9, n
"

# --- modes and options
i=0
for opt in "--mode unmasked" "--rc none" "--pad" "--batch-size 3"; do
    i=$((i + 1))
    run 0 $S "$T/in.vcf.gz" -o "$T/opt$i.vcf" $opt
done
# batch size changes nothing; --pad changes only windows that reach a contig end (POS 1 here);
# unmasked and single-strand scores exist for the same ALTs but differ
py "
import pysam; pysam.set_verbosity(0)
def load(p): return [(r.pos, r.info.get('MAMBA_LLR'), r.info.get('MAMBA_EMBDIST')) for r in pysam.VariantFile(p)]
base = load(T + '/out.vcf.gz'); um, rcn, pad, b3 = (load(T + '/opt%d.vcf' % i) for i in (1, 2, 3, 4))
def close(u, w): return (u is None) == (w is None) and (u is None or abs(u - w) <= 1e-5 * max(1, abs(u)))
ndiff = {'um': 0, 'rcn': 0}
for x, y, z, p, q in zip(base, um, rcn, pad, b3):
    for i in (1, 2):
        for u, w in zip(x[i] or (), q[i] or ()): assert close(u, w), (x, q)
        for u, w in zip(x[i] or (), p[i] or ()):
            assert close(u, w) or x[0] <= 32 or x[0] >= 100001 - 32, ('pad', x, p)
    for u, w in zip(x[1] or (), y[1] or ()):
        assert (u is None) == (w is None); ndiff['um'] += u is not None and abs(u - w) > 1e-4
    for u, w in zip(x[1] or (), z[1] or ()):
        assert (u is None) == (w is None); ndiff['rcn'] += u is not None and abs(u - w) > 1e-4
assert base[0][0] == 1 and not close(base[0][1][0], pad[0][1][0]), (base[0], pad[0])
assert ndiff['um'] > 30 and ndiff['rcn'] > 30, ndiff
"
run 0 $S "$T/in.vcf.gz" -o "$T/probs.vcf" --probs
py "
import pysam, math; pysam.set_verbosity(0)
n = 0
for r in pysam.VariantFile(T + '/probs.vcf'):
    for l, pr, pa in zip(r.info.get('MAMBA_LLR', ()), r.info.get('MAMBA_PREF', ()), r.info.get('MAMBA_PALT', ())):
        if l is None: assert pr is None and pa is None; continue
        assert 0 < pr < 1 and 0 < pa < 1 and abs(math.log(pa / pr) - l) < 1e-3, (r.pos, l, pr, pa); n += 1
assert n > 40
"
run 0 $BIN score -m "$CONF/ps_d128_n3" -f "$FA" -w 65 -t 1 --no-progress -r 20:1-3000 "$T/in.vcf.gz" -o "$T/ps.vcf"
has "$T/ps.vcf" "MAMBA_LLR="

# --- usage and input errors
run 1 $BIN score -m "$PH" "$T/in.vcf.gz"
has "$T/err" "no reference"
run 1 $S "$T/in.vcf.gz" --write-index
run 1 $S "$T/in.vcf.gz" --mode fast
run 1 $S "$T/in.vcf.gz" --ref-mismatch ignore
run 1 $S --all-snvs "$T/in.vcf.gz" --tsv "$T/x.tsv.gz" -r 20:1-10
run 1 $S --all-snvs -r 20:1-10
run 1 $S "$T/in.vcf.gz" -o "$T/in.vcf.gz"
run 1 $S
run 2 $S "$T/nonexistent.vcf.gz"
run 2 $BIN score -m "$PH" -f "$T/nonexistent.fa" "$T/in.vcf.gz"
run 0 $BIN score -h
has "$T/out" "--all-snvs"
done_ok
