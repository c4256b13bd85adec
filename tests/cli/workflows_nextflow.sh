# workflows_nextflow.sh: checks the Nextflow modules (workflows/nextflow) without Nextflow, which
# cannot be installed on these machines. workflows/nextflow/tests/nf_block_runner.py extracts a
# process's `script:` or `stub:` block, evaluates its Groovy preamble (task.ext.args from the
# module's tests/nextflow.config, task.ext.prefix, task.cpus, meta.id, the inputs), stages the
# inputs as symlinks, runs the script under `bash -euo pipefail` with the real binary on PATH and
# checks the declared outputs exist. On small real data (a GRCh37 chr20 slice and its 1000 Genomes
# sites; the lambda genome; SIRV reads):
#   MAMBA_DNA_SCORE over 3 tiles (one boundary cuts the deletion at 20:20992) + main.nf's
#   GATHER_VCF == MAMBA_DNA_SCORE on the whole file, record for record; MAMBA_DNA_EMBED over 2
#   lambda tiles + GATHER_EMBED == one 4 kb region; reads of a BAM; every versions.yml is YAML
#   with the binary's version; the stubs; the name-collision guard; a REF mismatch fails with the
#   tool's message and leaves no output. Skips (exit 0) without bcftools, bgzip or samtools.
. "$(dirname "$0")/lib.bash"

for t in bcftools bgzip samtools; do
    command -v $t >/dev/null || { echo "skip: $(basename "$0"): $t not installed"; exit 0; }
done
"$PY" -c "import yaml" 2>/dev/null || { echo "skip: $(basename "$0"): python3-yaml not installed"; exit 0; }
need_model
"$BIN" score -h >/dev/null 2>&1 || { echo "skip: $(basename "$0"): this binary has no score command"; exit 0; }

NF=$ROOT/workflows/nextflow
MOD=$NF/modules/local/mamba_dna
RUNNER=$NF/tests/nf_block_runner.py
R=$ROOT/tests/data/real
M=$CONF/ph_d128_n2
LAMBDA='gi|9626243|ref|NC_001416.1|'
VERSION=$("$BIN" --version | sed 's/^mamba-dna //')
cd "$T"
mkdir bin && ln -s "$BIN" bin/mamba-dna
export PATH="$T/bin:$NF/bin:$PATH"      # as Nextflow puts the pipeline's bin/ on PATH

# ext.args of a module's tests/nextflow.config
ext_args() { sed -n "s/^ *ext.args *= *'\(.*\)'.*/\1/p" "$MOD/$1/tests/nextflow.config"; }
SCORE_ARGS=$(ext_args score)
EMBED_ARGS=$(ext_args embed)
[ -n "$SCORE_ARGS" ] && [ -n "$EMBED_ARGS" ] || fail "no ext.args in the modules' tests/nextflow.config"

# nf FILE PROCESS script|stub WORKDIR SPEC_JSON: runs one block; the outputs listing in $T/out
nf() { "$PY" "$RUNNER" "$@"; }
# versions_ok WORKDIR PROCESS TOOL...: versions.yml is YAML: {PROCESS: {mamba-dna: VERSION, ...}}
versions_ok() {
    local d=$1 p=$2; shift 2
    py "
import yaml
v = yaml.safe_load(open('$d/versions.yml'))
assert list(v) == ['$p'], v
for tool in '$*'.split():
    assert tool in v['$p'] and str(v['$p'][tool]).strip(), (tool, v)
if 'mamba-dna' in v['$p']: assert str(v['$p']['mamba-dna']) == '$VERSION', v
"
}

# ---- data ------------------------------------------------------------------------------------
samtools faidx "$R/chr20_1M.fa.gz" 20:1-21000 | sed '1s/.*/>20/' | bgzip -c >ref.fa.gz
samtools faidx ref.fa.gz
bcftools view -r 20:13001-21000 -O z -o t.vcf.gz "$R/chr20_1M.sites.vcf.gz"
bcftools index -t t.vcf.gz
NREC=$(bcftools index -n t.vcf.gz)
samtools view -b -o sirv2.bam "$R/sirv_sub.bam" SIRV2
samtools index sirv2.bam
NREADS=$(samtools view -c sirv2.bam)
REF="[{\"id\": \"ref\"}, \"$T/ref.fa.gz\", \"$T/ref.fa.gz.fai\", \"$T/ref.fa.gz.gzi\"]"

# ---- main.nf VCF_CONTIGS: the contigs with records -----------------------------------------------
cat >s0.json <<EOF
{"inputs": [[{"id": "t"}, "$T/t.vcf.gz", "$T/t.vcf.gz.tbi"]], "cpus": 1}
EOF
run 0 nf "$NF/main.nf" VCF_CONTIGS script w_contigs s0.json
[ "$(cat w_contigs/.command.out)" = "20" ] || fail "VCF_CONTIGS printed '$(cat w_contigs/.command.out)'"

# ---- MAMBA_DNA_SCORE: 3 tiles, gathered by main.nf's GATHER_VCF, == the whole file ----------------
i=0; chunks=""
for reg in 20:1-15744 20:15745-20992 20:20993-21000; do
    id=$(printf 't.%05d' $i)
    cat >s$i.json <<EOF
{"inputs": [[{"id": "$id"}, "$T/t.vcf.gz", "$T/t.vcf.gz.tbi", "$reg"], $REF, "$M"],
 "ext_args": "$SCORE_ARGS", "ext_prefix": null, "cpus": 1}
EOF
    run 0 nf "$MOD/score/main.nf" MAMBA_DNA_SCORE script w_s$i s$i.json
    has "$T/out" "$id.vcf.gz.tbi"
    has w_s$i/.command.sh "-r '$reg' --regions-overlap 0"
    has w_s$i/.command.sh "$SCORE_ARGS"
    has w_s$i/.command.sh "-t 1"
    versions_ok w_s$i MAMBA_DNA_SCORE mamba-dna bcftools
    chunks="$chunks${chunks:+, }\"$T/w_s$i/$id.vcf.gz\""
    i=$((i + 1))
done
[ "$(bcftools view -H w_s2/t.00002.vcf.gz | wc -l)" -eq 0 ] || fail "the deletion starting in tile 2 is also in tile 3"
cat >g.json <<EOF
{"inputs": [[{"id": "t"}, "$T/t.vcf.gz", "$T/t.vcf.gz.tbi", [$chunks]]], "cpus": 2}
EOF
run 0 nf "$NF/main.nf" GATHER_VCF script w_gather g.json
has w_gather/.command.sh "chunks/t.00000.vcf.gz chunks/t.00001.vcf.gz chunks/t.00002.vcf.gz"
versions_ok w_gather GATHER_VCF bcftools

cat >sw.json <<EOF
{"inputs": [[{"id": "whole"}, "$T/t.vcf.gz", "$T/t.vcf.gz.tbi", ""], $REF, "$M"],
 "ext_args": "$SCORE_ARGS", "ext_prefix": null, "cpus": 2}
EOF
run 0 nf "$MOD/score/main.nf" MAMBA_DNA_SCORE script w_whole sw.json
hasnt w_whole/.command.err "records of"          # the whole file: no region pipe
bcftools view -H w_whole/whole.vcf.gz >whole.txt
bcftools view -H w_gather/t.vcf.gz >gathered.txt
lines whole.txt "$NREC"
cmp -s whole.txt gathered.txt || fail "gathered tiles differ from the whole-file run: $(diff whole.txt gathered.txt | head -5)"
[ "$(grep -c 'MAMBA_EMBDIST=' gathered.txt)" -eq "$NREC" ] || fail "records without MAMBA_EMBDIST"
NCHECK=$((NCHECK + 2))
run 0 bcftools view -H -r 20:16000-17000 w_whole/whole.vcf.gz      # the module's .tbi works
[ -s "$T/out" ] || fail "region query on the module's output returned nothing"
run 0 bcftools view -H -r 20:16000-17000 w_gather/t.vcf.gz
[ -s "$T/out" ] || fail "region query on the gathered output returned nothing"

# the name-collision guard: prefix 't' would overwrite the input t.vcf.gz
cat >sc.json <<EOF
{"inputs": [[{"id": "x"}, "$T/t.vcf.gz", "$T/t.vcf.gz.tbi", ""], $REF, []],
 "ext_args": "$SCORE_ARGS", "ext_prefix": "t", "cpus": 1}
EOF
run 90 nf "$MOD/score/main.nf" MAMBA_DNA_SCORE script w_collide sc.json
has "$T/err" "Input and output names are the same"
[ ! -e w_collide/.command.sh ] || fail "the script ran despite the name collision"

# a REF mismatch: the tool's message, a non-zero exit, no output
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
cat >sb.json <<EOF
{"inputs": [[{"id": "bad_scored"}, "$T/bad.vcf.gz", "$T/bad.vcf.gz.tbi", "20:13001-21000"], $REF, "$M"],
 "ext_args": "$SCORE_ARGS", "ext_prefix": null, "cpus": 1}
EOF
run 2 nf "$MOD/score/main.nf" MAMBA_DNA_SCORE script w_bad sb.json
has "$T/err" "does not match the reference"
has "$T/err" "records of bad.vcf.gz with POS in 20:13001-21000"
[ -z "$(ls w_bad | grep -v '^bad.vcf.gz' | grep -v -e '^ref.fa.gz' -e '^ph_d128_n2$')" ] || fail "left in the failed task's folder: $(ls w_bad)"
NCHECK=$((NCHECK + 1))

# the stub
run 0 nf "$MOD/score/main.nf" MAMBA_DNA_SCORE stub w_sstub s1.json
[ -e w_sstub/t.00001.vcf.gz ] && [ -e w_sstub/t.00001.vcf.gz.tbi ] || fail "score stub outputs missing"
versions_ok w_sstub MAMBA_DNA_SCORE mamba-dna bcftools

# ---- MAMBA_DNA_EMBED: 2 lambda tiles + GATHER_EMBED == one region; reads of a BAM ------------------
LFA="\"$R/lambda.fa.gz\", [\"$R/lambda.fa.gz.fai\", \"$R/lambda.fa.gz.gzi\"]"
e=0; npys=""; sides=""
for reg in "$LAMBDA:1-2048" "$LAMBDA:2049-4096" "$LAMBDA:1-4096"; do
    id=$(printf 'lambda.%05d' $e)
    cat >e$e.json <<EOF
{"inputs": [[{"id": "$id"}, $LFA, "$reg"], "$M"], "ext_args": "$EMBED_ARGS", "ext_prefix": null, "cpus": 1}
EOF
    run 0 nf "$MOD/embed/main.nf" MAMBA_DNA_EMBED script w_e$e e$e.json
    has w_e$e/.command.sh "-r '$reg'"
    has w_e$e/.command.sh "$EMBED_ARGS"
    versions_ok w_e$e MAMBA_DNA_EMBED mamba-dna
    if [ $e -lt 2 ]; then
        npys="$npys${npys:+, }\"$T/w_e$e/$id.npy\""
        sides="$sides${sides:+, }\"$T/w_e$e/$id.npy.bed\", \"$T/w_e$e/$id.npy.json\""
    fi
    e=$((e + 1))
done
cat >ge.json <<EOF
{"inputs": [[{"id": "lambda"}, [$npys], [$sides]]], "cpus": 1}
EOF
run 0 nf "$NF/main.nf" GATHER_EMBED script w_gembed ge.json
py "
def bed(p): return [l.rstrip('\n').split('\t') for l in open(p)]
a, b = np.load('w_gembed/lambda.npy'), np.load('w_e2/lambda.00002.npy')
assert a.shape == b.shape == (32, 128), (a.shape, b.shape)
assert np.array_equal(a, b), float(np.abs(a - b).max())
x, y = bed('w_gembed/lambda.npy.bed'), bed('w_e2/lambda.00002.npy.bed')
assert [r[:3] + r[6:] for r in x] == [r[:3] + r[6:] for r in y]
assert x[0][0] == '$LAMBDA' and x[16][1:3] == ['2048', '2176'] and x[16][6] == '16', x[16]
j = json.load(open('w_gembed/lambda.npy.json'))
assert j['rows'] == 32 and len(j['chunks']) == 2 and j['program'] == 'mamba-dna', j
print('embed: 2 lambda tiles gathered == one 4 kb region, %d rows' % a.shape[0])
"
cat >eb.json <<EOF
{"inputs": [[{"id": "sirv2"}, "$T/sirv2.bam", "$T/sirv2.bam.bai", ""], []], "ext_args": "$EMBED_ARGS", "ext_prefix": "sirv2_reads", "cpus": 2}
EOF
# no model given ([]): point mamba-dna's default-model lookup at the test checkpoint
export MAMBA_DNA_MODEL=$M
run 0 nf "$MOD/embed/main.nf" MAMBA_DNA_EMBED script w_bam eb.json
unset MAMBA_DNA_MODEL
hasnt w_bam/.command.sh " -m "
hasnt w_bam/.command.sh " -r "
py "
r = np.load('w_bam/sirv2_reads.npy')
assert r.shape[0] >= $NREADS and r.shape[1] == 128 and np.isfinite(r).all(), r.shape
assert len(set(l.split('\t')[3].split('|')[0] for l in open('w_bam/sirv2_reads.npy.bed'))) == $NREADS
"
versions_ok w_bam MAMBA_DNA_EMBED mamba-dna
run 0 nf "$MOD/embed/main.nf" MAMBA_DNA_EMBED stub w_estub e0.json
for f in lambda.00000.npy lambda.00000.npy.bed lambda.00000.npy.json; do
    [ -e "w_estub/$f" ] || fail "embed stub: $f missing"
done
versions_ok w_estub MAMBA_DNA_EMBED mamba-dna

# ---- the nf-test files name their module and have a stub test; YAML files parse -----------------
for m in score embed; do
    P=MAMBA_DNA_$(echo $m | tr a-z A-Z)
    has "$MOD/$m/tests/main.nf.test" "process \"$P\""
    has "$MOD/$m/tests/main.nf.test" 'options "-stub"'
    has "$MOD/$m/main.nf" "label 'process_gpu'"
    has "$MOD/$m/main.nf" 'path "versions.yml"'
done
py "
import yaml, glob
for f in glob.glob('$NF/modules/local/mamba_dna/*/*.yml'):
    d = yaml.safe_load(open(f)); assert d, f
    if f.endswith('meta.yml'): assert d['name'].startswith('mamba_dna_') and d['input'] and d['output'], f
"
done_ok
