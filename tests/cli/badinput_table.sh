# badinput_table.sh: table-driven bad-input test (issue 8 item 2). Builds hostile fixtures (truncated
# and corrupt compressed files, wrong formats, binary garbage, huge header fields, negative and
# overflowing coordinates, 2^31-base claims, CRLF, empty records, broken checkpoints), then runs
# every row of tests/cli/badinput.tsv under a timeout. Each row must exit with its code, print its
# message fragment, not crash (no signal, no sanitizer report) or hang, and, when it fails, leave no
# file in its output folder; a row with exit 0 must have written output. The fixtures folder must
# be unchanged at the end (nothing written next to an input). ROW=name runs one row.
. "$(dirname "$0")/lib.bash"
need_model
for t in samtools bgzip bcftools; do
    command -v $t >/dev/null || { echo "skip: badinput_table.sh: $t missing"; exit 0; }
done
PH=$CONF/ph_d128_n2
F=$T/fx
TIMEOUT=${BADINPUT_TIMEOUT:-120}
# ---- fixtures ----------------------------------------------------------------------------
build_fixtures() {
fa=$PH/input_L1000.fa
mkdir -p "$F"
cd "$F"
# a reference of two contigs, plain and indexed
seq=$(tail -n +2 "$fa" | tr -d '\n' | tr N A)
{ echo '>c1'; echo "$seq"; echo '>c2'; echo "$seq" | rev; } > ref.fa
samtools faidx ref.fa
cp "$fa" good.fa
gzip -c good.fa > good.fa.gz
bgzip -c good.fa > good.fa.bgz
head -c 40 good.fa.gz > trunc.fa.gz
python3 - <<'PY'
import gzip, struct, random, zlib, os
d = open('good.fa.gz', 'rb').read()
b = bytearray(d); 
for i in range(30, 60): b[i] ^= 0x5a
open('corrupt.fa.gz', 'wb').write(bytes(b))
b = bytearray(d); b[-8:-4] = b'\0\0\0\0'   # CRC wrong
open('badcrc.fa.gz', 'wb').write(bytes(b))
random.seed(7)
open('garbage.bin', 'wb').write(bytes(random.randrange(256) for _ in range(4096)))
open('png.fa', 'wb').write(b'\x89PNG\r\n\x1a\n' + bytes(200))
open('elf.fa', 'wb').write(open('/bin/true', 'rb').read()[:20000])
seq = ''.join(open('good.fa').read().split('\n')[1:])
open('crlf.fa', 'w', newline='').write('>crlf\r\n' + seq[:500] + '\r\n' + seq[500:] + '\r\n')
open('mixcase.fa', 'w').write('>mix\n' + ''.join(c.lower() if i % 3 == 0 else c for i, c in enumerate(seq)) + '\n')
open('emptyrec.fa', 'w').write('>e1\n>e2\n\n>e3\nACGTACGT\n')
open('onlyempty.fa', 'w').write('>e1\n>e2\n')
open('noheader.fa', 'w').write('ACGTACGTACGT\n')
open('hugename.fa', 'w').write('>' + 'n' * (1 << 20) + '\nACGTACGT\n')
open('nul.fa', 'wb').write(b'>x\nACGT\0ACGT\n')
open('bad.fq', 'w').write('@r1\nACGT\n+\nII\n')
open('trunc.fq', 'w').write('@r1\nACGT\n+\nIIII\n@r2\nACG')
open('crlf.fq', 'w', newline='').write('@r1\r\nACGTACGTAC\r\n+\r\nIIIIIIIIII\r\n')
# fai claiming 2^31 bases
open('claim.fa', 'w').write('>big\nACGTACGT\n')
open('claim.fa.fai', 'w').write('big\t2147483648\t5\t8\t9\n')
open('negfai.fa', 'w').write('>big\nACGTACGT\n')
open('negfai.fa.fai', 'w').write('big\t-5\t5\t8\t9\n')
PY
# SAM/BAM
printf '@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:2147483648\nr1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tIIII\n' > bigsq.sam
{ printf '@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:100\n@CO\t'; head -c 1000000 /dev/zero | tr '\0' c; printf '\nr1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tIIII\n'; } > hugeco.sam
printf '@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:100\nr1\t0\tchr1\t-5\t60\t4M\t*\t0\t0\tACGT\tIIII\n' > negpos.sam
printf '@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:100\nr1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGTAC\tIIII\n' > seqlen.sam
samtools view -b -o reads.bam "$ROOT/tests/data/seq/reads.sam"
head -c 300 reads.bam > trunc.bam
head -c 200 /bin/true | gzip -c > gzbinary.fa.gz
gzip -c < /dev/null > empty.fa.gz
printf 'big\t2147483647\t5\t8\t9\n' > claim2.fa.fai
printf '>big\nACGTACGT\n' > claim2.fa
cp "$ROOT/tests/data/seq/reads.cram" reads.cram
head -c 700 reads.cram > trunc.cram
# VCFs against ref.fa (c1, c2: 1000 bases each)
hdr='##fileformat=VCFv4.2\n##contig=<ID=c1,length=1000>\n##contig=<ID=c2,length=1000>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n'
r1=$(printf %s "$seq" | cut -c100)
alt() { case $1 in A) echo G;; C) echo T;; G) echo A;; *) echo C;; esac; }
printf "$hdr" > head.vcf
{ cat head.vcf; printf 'c1\t100\t.\t%s\t%s\t.\t.\t.\n' "$r1" "$(alt $r1)"; } > good.vcf
bgzip -c good.vcf > good.vcf.gz
head -c $(( $(stat -c %s good.vcf.gz) - 10 )) good.vcf.gz > trunc.vcf.gz
bcftools view -Ob -o good.bcf good.vcf 2>/dev/null
head -c 100 good.bcf > trunc.bcf
wrong=$(alt $r1)
{ cat head.vcf; printf 'c1\t100\t.\t%s\t%s\t.\t.\t.\n' "$wrong" "$r1"; } > refmm.vcf
{ cat head.vcf; printf 'chrZ\t100\t.\tA\tG\t.\t.\t.\n'; } > unkctg.vcf
{ printf '##fileformat=VCFv4.2\n##contig=<ID=c1,length=1000>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n'; printf 'chrZ\t100\t.\tA\tG\t.\t.\t.\n'; } > unkctg2.vcf
{ cat head.vcf; printf 'c1\t-5\t.\tA\tG\t.\t.\t.\n'; } > negpos.vcf
{ cat head.vcf; printf 'c1\t0\t.\tA\tG\t.\t.\t.\n'; } > zeropos.vcf
{ cat head.vcf; printf 'c1\t99999999999\t.\tA\tG\t.\t.\t.\n'; } > hugepos.vcf
{ cat head.vcf; printf 'c1\t5000\t.\tA\tG\t.\t.\t.\n'; } > pastend.vcf
{ printf '##fileformat=VCFv4.2\n##contig=<ID=c1,length=2147483648>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n'; printf 'c1\t100\t.\t%s\t%s\t.\t.\t.\n' "$r1" "$(alt $r1)"; } > bigctg.vcf
sed 's/$/\r/' good.vcf > crlf.vcf
{ cat head.vcf; printf 'c1\t100\t.\t%s\t%s\t.\t.\t.\n' "$(echo $r1 | tr ACGT acgt)" "$(alt $r1 | tr ACGT acgt)"; } > lower.vcf
{ cat head.vcf; printf 'c1\t100\n'; } > shortline.vcf
{ cat head.vcf; printf '\n'; } > emptyline.vcf
{ printf '##fileformat=VCFv4.2\n##INFO=<ID=X,Number=1,Type=String,Description="%s">\n' "$(head -c 2000000 /dev/zero | tr '\0' x)"; tail -n +2 head.vcf; } > hugehdr.vcf
r50=$(printf %s "$seq" | cut -c50)
{ cat head.vcf; printf 'c1\t100\t.\t%s\t%s\t.\t.\t.\n' "$r1" "$(alt $r1)"; printf 'c1\t50\t.\t%s\t%s\t.\t.\t.\n' "$r50" "$(alt $r50)"; } > unsorted.vcf
printf 'not a vcf\n' > notvcf.vcf
{ sed '$d' head.vcf; printf '#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t\ts2\n'; } > emptysample.vcf
# BED / regions
printf 'c1\t-5\t10\n' > neg.bed
printf 'c1\t10\t99999999999999999999\n' > huge.bed
printf 'c1\t20\t10\n' > inverted.bed
printf 'chrZ\t1\t10\n' > unk.bed
printf 'c1\tabc\t10\n' > nonnum.bed
printf 'c1\t1\t10\r\n' > crlf.bed
# model folders
m() { mkdir -p "$1"; cp "$PH/config.json" "$PH/model.safetensors" "$1/"; }
m shape; python3 - <<'PY'
import json
c = json.load(open('shape/config.json')); c['d_model'] = 64; json.dump(c, open('shape/config.json', 'w'))
PY
m layers; python3 -c "
import json; c = json.load(open('layers/config.json')); c['n_layer'] = 3; json.dump(c, open('layers/config.json', 'w'))"
m nanw; m infw; m hdrlen; m truncst; m badjson; m negdim; m overlap; m dtype; m hugecfg
python3 - <<'PY'
import json, struct
def edit(d, fn):
    b = bytearray(open(d + '/model.safetensors', 'rb').read())
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    b = fn(b, n, h)
    open(d + '/model.safetensors', 'wb').write(bytes(b))
def first(h):
    k = sorted(x for x in h if x != '__metadata__')[0]
    return k, h[k]
def nan(b, n, h):
    k, t = first(h); o = 8 + n + t['data_offsets'][0]; b[o:o + 4] = struct.pack('<f', float('nan')); return b
def inf(b, n, h):
    k, t = first(h); o = 8 + n + t['data_offsets'][1] - 4; b[o:o + 4] = struct.pack('<f', float('-inf')); return b
def hdrlen(b, n, h):
    b[:8] = struct.pack('<Q', 1 << 62); return b
def rehdr(b, n, h, h2):
    data = b[8 + n:]
    s = json.dumps(h2).encode(); s += b' ' * ((8 - len(s) % 8) % 8)
    return bytearray(struct.pack('<Q', len(s)) + s + data)
def negdim(b, n, h):
    k, t = first(h); t['shape'] = [-1] + t['shape'][1:]; return rehdr(b, n, h, h)
def overlap(b, n, h):
    k, t = first(h); t['data_offsets'] = [t['data_offsets'][0], t['data_offsets'][1] + (1 << 40)]; return rehdr(b, n, h, h)
def dtype(b, n, h):
    k, t = first(h); t['dtype'] = 'I8'; return rehdr(b, n, h, h)
edit('nanw', nan); edit('infw', inf); edit('hdrlen', hdrlen); edit('negdim', negdim); edit('overlap', overlap); edit('dtype', dtype)
b = open('truncst/model.safetensors', 'rb').read(); open('truncst/model.safetensors', 'wb').write(b[:len(b) // 2])
open('badjson/config.json', 'w').write('{"d_model": 128, "n_layer": ')
c = json.load(open('hugecfg/config.json')); c['d_model'] = 1 << 31; c['n_layer'] = 1 << 30
json.dump(c, open('hugecfg/config.json', 'w'))
PY
mkdir -p emptydir
mkfifo out.fifo
printf 'x' > notadir
}
( build_fixtures ) >"$T/fixtures.log" 2>&1 || { cat "$T/fixtures.log" >&2; fail "building the fixtures"; }
cd "$T"
before=$(cd "$F" && find . | LC_ALL=C sort | md5sum)

# ---- the table ------------------------------------------------------------------------------
nrow=0
while IFS=$'\t' read -r name want frag cmd; do
    case $name in '#'* | '') continue ;; esac
    [ -n "${ROW:-}" ] && [ "$ROW" != "$name" ] && continue
    nrow=$((nrow + 1))
    OD=$T/o/$name
    mkdir -p "$OD"
    O=$OD/out
    # expand $F $PH $O only (no other shell evaluation of the table)
    line=${cmd//\$F/$F}
    line=${line//\$PH/$PH}
    line=${line//\$O/$O}
    read -r -a args <<<"$line"
    rc=0
    timeout -k 5 "$TIMEOUT" "$BIN" "${args[@]}" </dev/null >"$T/out" 2>"$T/err" || rc=$?
    NCHECK=$((NCHECK + 1))
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && fail "$name: timed out after ${TIMEOUT}s: $line"
    [ "$rc" -ge 128 ] && fail "$name: killed by signal $((rc - 128)): $line"
    grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|Segmentation fault' "$T/err" &&
        fail "$name: sanitizer report: $line"
    [ "$rc" -eq "$want" ] || fail "$name: exit $rc (expected $want): $line"
    [ "$frag" = - ] || has "$T/err" "$frag"
    left=$(find "$OD" -mindepth 1 -type f | head -n 5)
    if [ "$want" -ne 0 ]; then
        [ -z "$left" ] || fail "$name: failed run left files: $left"
        [ -s "$T/out" ] && fail "$name: stdout not empty after an error"
    else
        [ -n "$left" ] || [ -s "$T/out" ] || fail "$name: exit 0 but no output"
    fi
    rm -rf "$OD"
    [ -z "${VERBOSE:-}" ] || echo "  $name: exit $rc"
done <"$ROOT/tests/cli/badinput.tsv"
[ -n "${ROW:-}" ] || [ "$nrow" -ge 60 ] || fail "only $nrow rows in badinput.tsv"
after=$(cd "$F" && find . | LC_ALL=C sort | md5sum)
[ -n "${ROW:-}" ] || [ "$before" = "$after" ] || fail "files appeared or vanished next to the inputs"
echo "ok: badinput_table.sh: $nrow rows, $NCHECK checks"
