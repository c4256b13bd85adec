# workflows_snakemake.sh: runs the Snakemake workflow (workflows/snakemake) for real with Debian's
# snakemake on small real data, and checks it against unsplit runs of the binary:
#   score: a GRCh37 chr20 slice (1-21,000) and its 1000 Genomes sites in 13,001-21,000, scattered
#          into 5 tiles (one boundary cuts a deletion: 20:20992 GTAAA>G reaches into the last
#          tile), gathered with bcftools concat: `bcftools view -H` equals one `mamba-dna score`.
#   embed: a two-contig FASTA (chr20 1-7,000 + lambda 1-3,000) in 3,840-base tiles equals one
#          whole-file `mamba-dna embed`; the lambda genome's BED regions (one cut in two, packed
#          into jobs) equal one `embed -R`; the reads of one SIRV contig, one row per read.
#   errors: a REF mismatch and a contig missing from the reference stop their jobs with the
#          tool's message and a non-zero exit; no final output, chunk or temporary file remains.
#   also: the wrappers' test/Snakefiles run, the profiles parse (dry run).
# Skips (exit 0) without snakemake, bcftools, bgzip or samtools.
. "$(dirname "$0")/lib.bash"

SMK=${SNAKEMAKE:-/usr/bin/snakemake}
[ -x "$SMK" ] || SMK=$(command -v snakemake || true)
[ -n "$SMK" ] || { echo "skip: $(basename "$0"): snakemake not installed (apt-get install snakemake)"; exit 0; }
for t in bcftools bgzip samtools; do
    command -v $t >/dev/null || { echo "skip: $(basename "$0"): $t not installed"; exit 0; }
done
need_model
"$BIN" score -h >/dev/null 2>&1 || { echo "skip: $(basename "$0"): this binary has no score command"; exit 0; }

WF=$ROOT/workflows/snakemake
R=$ROOT/tests/data/real
M=$CONF/ph_d128_n2
LAMBDA='gi|9626243|ref|NC_001416.1|'
cd "$T"
TIMES="" ; tlast=$(date +%s.%N)
lap() { local now; now=$(date +%s.%N); TIMES="$TIMES $1 $(awk -v a="$tlast" -v b="$now" 'BEGIN { printf "%.1fs", b - a }')"; tlast=$now; }

# ---- data ------------------------------------------------------------------------------------
samtools faidx "$R/chr20_1M.fa.gz" 20:1-21000 | sed '1s/.*/>20/' | bgzip -c >ref.fa.gz
samtools faidx ref.fa.gz
bcftools view -r 20:13001-21000 -O z -o t.vcf.gz "$R/chr20_1M.sites.vcf.gz"
bcftools index -t t.vcf.gz
NREC=$(bcftools index -n t.vcf.gz)
[ "$NREC" -gt 50 ] || fail "test VCF has only $NREC records"
{ samtools faidx "$R/chr20_1M.fa.gz" 20:1-7000 | sed '1s/.*/>20/'
  samtools faidx "$R/lambda.fa.gz" "$LAMBDA:1-3000" | sed '1s/.*/>lambda/'; } | bgzip -c >mini.fa.gz
samtools faidx mini.fa.gz
printf '%s\t0\t5000\n%s\t30000\t31000\n' "$LAMBDA" "$LAMBDA" >lambda.bed
samtools view -b -o sirv2.bam "$R/sirv_sub.bam" SIRV2
NREADS=$(samtools view -c sirv2.bam)

cat >c.yaml <<EOF
mamba_dna: $BIN
model: $M
reference: ref.fa.gz
outdir: res
device: cpu
threads: 1
score:
  vcfs: {t: t.vcf.gz}
  region_size: 5248
  extra: "-w 128"
embed:
  fasta:
    mini: mini.fa.gz
    lambda: {path: "$R/lambda.fa.gz", regions_bed: lambda.bed}
  bams: {sirv2: sirv2.bam}
  region_size: 3800
  window: 128
  reads_extra: "-w 0"
EOF

lap data
# ---- the workflow, for real --------------------------------------------------------------------
run 0 "$SMK" -s "$WF/Snakefile" --configfile c.yaml --cores 2 --show-failed-logs
lap workflow
has "$T/err" "score_chunk"
for f in res/score/t.vcf.gz res/score/t.vcf.gz.tbi res/embed/mini.npy res/embed/lambda.npy res/embed/sirv2.npy; do
    [ -s "$f" ] || fail "workflow output $f missing"
done
for f in res/embed/{mini,lambda,sirv2}.npy.{bed,json}; do [ -s "$f" ] || fail "workflow output $f missing"; done
# 5 score tiles; 2 + 1 mini tiles (3800 rounded up to 3840 = 30 windows); 2 lambda jobs;
# chunks are temp() and gone
[ "$(ls res/logs/score/t | wc -l)" -eq 5 ] || fail "expected 5 score jobs: $(ls res/logs/score/t)"
[ "$(ls res/logs/embed/mini | wc -l)" -eq 3 ] || fail "expected 3 mini embed jobs: $(ls res/logs/embed/mini)"
[ "$(ls res/logs/embed/lambda | wc -l)" -eq 2 ] || fail "expected 2 lambda embed jobs: $(ls res/logs/embed/lambda)"
[ -z "$(find res/score/t res/embed/mini res/embed/lambda -type f 2>/dev/null)" ] || fail "chunks left: $(find res -path '*chunks*' -type f)"
[ -z "$(find res -name '*.tmp*')" ] || fail "temporary files left: $(find res -name '*.tmp*')"
NCHECK=$((NCHECK + 4))

# ---- score: scattered == unsplit, record for record ---------------------------------------------
run 0 "$BIN" score -m "$M" -d cpu -t 2 -w 128 -f ref.fa.gz -o single.vcf.gz t.vcf.gz
lap unsplit_score
bcftools view -H single.vcf.gz >single.txt
bcftools view -H res/score/t.vcf.gz >gathered.txt
lines single.txt "$NREC"
cmp -s single.txt gathered.txt || fail "gathered VCF differs from the unsplit run: $(diff single.txt gathered.txt | head -5)"
NCHECK=$((NCHECK + 1))
[ "$(grep -c $'^20\t20992\t' gathered.txt)" -eq 1 ] || fail "the deletion at the tile boundary is not there once"
[ "$(grep -c 'MAMBA_EMBDIST=' gathered.txt)" -eq "$NREC" ] || fail "records without MAMBA_EMBDIST"
NCHECK=$((NCHECK + 2))
bcftools view -h res/score/t.vcf.gz >hdr.txt
has hdr.txt '##INFO=<ID=MAMBA_LLR,Number=A,Type=Float'
has hdr.txt '##mamba-dnaCommand='
run 0 bcftools view -H -r 20:16000-17000 res/score/t.vcf.gz   # the .tbi works
[ -s "$T/out" ] || fail "region query on the gathered VCF returned nothing"

# ---- embed: scattered == unsplit ---------------------------------------------------------------
run 0 "$BIN" embed -m "$M" -d cpu -t 2 -w 128 -o single_mini.npy mini.fa.gz
run 0 "$BIN" embed -m "$M" -d cpu -t 2 -w 128 -R lambda.bed -o single_lambda.npy "$R/lambda.fa.gz"
py "
import json
def bed(p): return [l.rstrip('\n').split('\t') for l in open(p)]
for name in ('mini', 'lambda'):
    a, b = np.load('res/embed/%s.npy' % name), np.load('single_%s.npy' % name)
    assert a.dtype == np.float32 and a.shape == b.shape, (name, a.shape, b.shape)
    assert np.array_equal(a, b), (name, 'max diff', float(np.abs(a - b).max()))
    x, y = bed('res/embed/%s.npy.bed' % name), bed('single_%s.npy.bed' % name)
    assert len(x) == len(y) == a.shape[0], (name, len(x), len(y))
    # chrom, start, end, first row, rows; the name column holds the job's region
    assert [r[:3] + r[6:] for r in x] == [r[:3] + r[6:] for r in y], name
    j = json.load(open('res/embed/%s.npy.json' % name))
    assert j['rows'] == a.shape[0] and sum(c['rows'] for c in j['chunks']) == a.shape[0]
    assert j['model']['sha256'] and j['program'] == 'mamba-dna', j.keys()
assert len(json.load(open('res/embed/mini.npy.json'))['chunks']) == 3
r = np.load('res/embed/sirv2.npy')
assert r.shape == ($NREADS, 128), r.shape
assert np.isfinite(r).all()
assert len(bed('res/embed/sirv2.npy.bed')) == $NREADS
print('embed: mini %s, lambda %s rows identical to unsplit runs; sirv2 %d reads' % (np.load('res/embed/mini.npy').shape[0], np.load('res/embed/lambda.npy').shape[0], r.shape[0]))
"

lap unsplit_embed
# ---- errors: the tool's message, a non-zero exit, nothing under final names ---------------------
# A SNV whose REF no longer matches the FASTA (after 16 records have been written) and a VCF
# naming the contig chr20; one job per contig.
bcftools view t.vcf.gz | "$PY" -c "
import sys
done = False
for line in sys.stdin:
    f = line.split('\t')
    if not done and not line.startswith('#') and int(f[1]) > 16000 and len(f[3]) == len(f[4]) == 1:
        f[3] = next(b for b in 'ACGT' if b not in (f[3], f[4])); done = True
        line = '\t'.join(f)
    sys.stdout.write(line)
" | bgzip -c >bad.vcf.gz
bcftools index -t bad.vcf.gz
echo "20 chr20" >ren.txt
bcftools annotate --rename-chrs ren.txt -O z -o chr.vcf.gz t.vcf.gz
bcftools index -t chr.vcf.gz
cat >f.yaml <<EOF
mamba_dna: $BIN
model: $M
reference: ref.fa.gz
outdir: fout
device: cpu
threads: 1
score:
  vcfs: {bad: bad.vcf.gz, chr: chr.vcf.gz}
  scatter: contig
  extra: "-w 128"
EOF
run 1 "$SMK" -s "$WF/Snakefile" --configfile f.yaml --cores 2 --keep-going --show-failed-logs
has "$T/err" "does not match the reference"
has "$T/err" "contig 'chr20' is not in the reference"
has "$T/err" "Error in rule score_chunk"
for f in fout/score/bad.vcf.gz fout/score/bad.vcf.gz.tbi fout/score/chr.vcf.gz; do
    [ ! -e "$f" ] || fail "$f exists after a failed run"
done
for c in bad chr; do
    log=$(ls fout/logs/score/$c/*.log)
    has "$log" "E::"
    [ -z "$(ls fout/score/$c/chunks 2>/dev/null)" ] || fail "fout/score/$c/chunks: $(ls fout/score/$c/chunks)"
done
[ -z "$(find fout -name '*.tmp' -o -name '*.tmp.*' -o -name '*.tmp[0-9]*')" ] || fail "temporary files left: $(find fout -name '*tmp*')"
NCHECK=$((NCHECK + 1))

lap failures
# ---- the wrappers' own tests, and the profiles ---------------------------------------------------
# (of the embed wrapper's test only the -R case: the workflow already ran its -r and BAM forms)
run 0 "$SMK" -s "$WF/wrappers/mamba_dna/score/test/Snakefile" --cores 2 --directory "$T/wrap_score" \
    --config mamba_dna="$BIN" --show-failed-logs
run 0 "$SMK" -s "$WF/wrappers/mamba_dna/embed/test/Snakefile" --cores 2 --directory "$T/wrap_embed" \
    --config mamba_dna="$BIN" --show-failed-logs -- lambda.npy
[ "$(bcftools view -H "$T/wrap_score/scored.region.bcf" | wc -l)" -eq \
  "$(bcftools view -H -r 20:1-2500 --regions-overlap 0 "$R/chr20_1M.sites.vcf.gz" | wc -l)" ] || fail "score wrapper: region records"
run 0 bcftools view -H -r 20:3000-4000 "$T/wrap_score/scored.vcf.gz"
has "$T/out" "MAMBA_PALT="
lap wrapper_tests
py "
b = np.load('$T/wrap_embed/lambda.npy'); assert b.shape == (7, 128), b.shape   # -w 256 -s 128 over 1 kb
"
run 0 "$SMK" -s "$WF/Snakefile" --configfile c.yaml -n -F --profile "$WF/profiles/local-gpu"
has "$T/out" "gpu=1"

lap profile
echo "timing (wall, this machine):$TIMES"
done_ok
