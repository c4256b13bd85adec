#!/bin/bash
# data_check.sh: checks the committed real fixtures (tests/data/real/): REF alleles against the
# FASTA slice, record counts, indexes, size budget; and, when `make data` has filled data/, that the
# commands in tests/data/README.md still reproduce each fixture's content from data/. The binary
# ($1, from `make test`) is not used. Skips (exit 0) without samtools/bcftools/bgzip.
set -eu
cd "$(dirname "$0")/../.." || exit 1
R=tests/data/real
D=data
N=0
fail() { echo "FAIL (data_check.sh): $*" >&2; exit 1; }
ok() { N=$((N + 1)); }
for t in samtools bcftools bgzip tabix; do
    command -v "$t" >/dev/null 2>&1 || { echo "skip: data_check.sh: $t not installed"; exit 0; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/md-data-check.XXXXXX")
trap 'rm -rf "$T"' EXIT

# --- the committed fixtures on their own ---
total=$(cat "$R"/* | wc -c)
[ "$total" -lt 400000 ] || fail "tests/data/real/ is $total bytes (budget 400 KB)"; ok
[ "$(cut -f1,2 "$R/chr20_1M.fa.gz.fai")" = "$(printf '20\t100001')" ] || fail "chr20_1M.fa.gz.fai"; ok
for v in chr20_1M.sites.vcf.gz chr20_1M.sites.bcf chr20_1M.3samples.vcf.gz; do
    bcftools norm -c e -f "$R/chr20_1M.fa.gz" "$R/$v" -Ou -o /dev/null 2>"$T/err" \
        || fail "$v: REF does not match chr20_1M.fa.gz: $(head -c 300 "$T/err")"; ok
    [ "$(bcftools view -H "$R/$v" | wc -l)" -eq 803 ] || fail "$v: not 803 records"; ok
    [ "$(bcftools index -n "$R/$v" 2>/dev/null)" -eq 803 ] || fail "$v: index does not count 803 records"; ok
done
[ "$(bcftools view -H -r 20:227 "$R/chr20_1M.sites.vcf.gz" | cut -f3-5)" = "$(printf 'rs376678365\tA\tT')" ] \
    || fail "first record is not rs376678365 A>T at 20:227"; ok
[ "$(samtools faidx "$R/chr20_1M.fa.gz" 20:227-236 | tail -n 1)" = ACCACCCACA ] \
    || fail "chr20_1M.fa.gz 20:227-236 is not ACCACCCACA"; ok
samtools quickcheck "$R/sirv_sub.bam" || fail "sirv_sub.bam fails samtools quickcheck"; ok
[ "$(samtools idxstats "$R/sirv_sub.bam" | awk '{s += $3} END {print s}')" -eq 211 ] || fail "sirv_sub.bam: not 211 reads"; ok
[ "$(samtools faidx "$R/lambda.fa.gz" 'gi|9626243|ref|NC_001416.1|:1-10' | tail -n 1)" = GGGCGGCGAC ] \
    || fail "lambda.fa.gz does not start with GGGCGGCGAC"; ok

# --- reproduction from data/ (after make data) ---
if [ ! -f "$D/hg37/20.fa.gz" ] || [ ! -f "$D/1kg/chr20.vcf.gz" ] || [ ! -f "$D/lambda/lambda.fa.gz" ] \
   || [ ! -f "$D/reads/sirv.bam" ]; then
    echo "ok: data_check.sh: $N checks (reproduction from data/ skipped: run make data)"
    exit 0
fi
shift_pos() { awk 'BEGIN{OFS="\t"} /^#/ {print; next} {$2 -= 999999; print}'; }
samtools faidx "$D/hg37/20.fa.gz" 20:1000000-1100000 | sed '1s/^>.*/>20/' > "$T/fa"
cmp -s "$T/fa" <(bgzip -dc "$R/chr20_1M.fa.gz") || fail "chr20_1M.fa.gz differs from data/hg37/20.fa.gz"; ok
bcftools view --no-version -G -r 20:1000000-1100000 "$D/1kg/chr20.vcf.gz" | shift_pos > "$T/sites"
cmp -s "$T/sites" <(bgzip -dc "$R/chr20_1M.sites.vcf.gz") || fail "chr20_1M.sites.vcf.gz is not reproduced"; ok
cmp -s "$T/sites" <(bcftools view --no-version "$R/chr20_1M.sites.bcf") || fail "chr20_1M.sites.bcf is not reproduced"; ok
bcftools view --no-version -I -s HG00096,HG00097,HG00099 -r 20:1000000-1100000 "$D/1kg/chr20.vcf.gz" \
    | shift_pos > "$T/s3"
cmp -s "$T/s3" <(bgzip -dc "$R/chr20_1M.3samples.vcf.gz") || fail "chr20_1M.3samples.vcf.gz is not reproduced"; ok
cmp -s <(bgzip -dc "$D/lambda/lambda.fa.gz") <(bgzip -dc "$R/lambda.fa.gz") || fail "lambda.fa.gz differs"; ok
cmp -s <(samtools view --no-PG -s 42.0025 "$D/reads/sirv.bam") <(samtools view "$R/sirv_sub.bam") \
    || fail "sirv_sub.bam is not reproduced"; ok
echo "ok: data_check.sh: $N checks (fixtures reproduced from data/)"
