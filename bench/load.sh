#!/bin/bash
# load.sh: load test of the I/O paths (issue 8 item 4): `score` over a large VCF and `embed` over a
# large FASTA with a tiny model (d_model 8, 1 layer, made here with `pretrain`), so that the time
# goes to reading, windowing and writing, not to the model.
#   - peak RSS of the normal build at 10% and at 100% of each input: memory must be flat
#     (RSS(100%) <= 1.25 x RSS(10%) + 32 MB);
#   - the whole inputs under the ASan+UBSan build (leak checking on): no report;
#   - a slice (LOAD_SLICE_PCT % of the inputs) under valgrind memcheck: no error, no definite or
#     indirect leak.
# Usage: bench/load.sh [BIN [SAN_BIN]]   (defaults: build/mamba-dna, build-san/mamba-dna)
# Knobs: LOAD_VCF_RECORDS (100000), LOAD_FASTA_MB (100), LOAD_SLICE_PCT (1), LOAD_THREADS (2),
#        LOAD_DIR (scratch folder; default a new one under $TMPDIR, removed at the end),
#        LOAD_SKIP="asan valgrind" to leave out parts.
# Prints one line per measurement and "load: N checks, M failed"; exits 1 on any failure.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/build/mamba-dna}
SAN=${2:-$ROOT/build-san/mamba-dna}
NREC=${LOAD_VCF_RECORDS:-100000}
FAMB=${LOAD_FASTA_MB:-100}
SLICE=${LOAD_SLICE_PCT:-1}
THR=${LOAD_THREADS:-2}
SKIP=${LOAD_SKIP:-}
for t in samtools bgzip python3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "load: $t is missing" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "load: $BIN is not executable" >&2; exit 1; }
if [ -n "${LOAD_DIR:-}" ]; then D=$LOAD_DIR; mkdir -p "$D"; else
    D=$(mktemp -d "${TMPDIR:-/tmp}/mamba-dna-load.XXXXXX"); trap 'rm -rf "$D"' EXIT; fi
nchk=0 nfail=0
check() { nchk=$((nchk + 1)); if eval "$2"; then echo "ok    $1"; else nfail=$((nfail + 1)); echo "FAIL  $1"; fi; }
log() { echo "[load] $*" >&2; }

# ---- inputs ----------------------------------------------------------------------------------
log "inputs in $D: ${NREC} VCF records, ${FAMB} MB FASTA"
python3 - "$D" "$NREC" "$FAMB" "$SLICE" <<'EOF'
import random, sys
d, nrec, famb, slice_pct = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(8)
table = bytes(b'ACGT'[i & 3] for i in range(256))
def seq(n):
    return rng.randbytes(n).translate(table)
# reference: 2 contigs, long enough for nrec SNVs about every 40 bases
clen = max(200000, nrec * 20)
ref = {'chrA': seq(clen), 'chrB': seq(clen)}
with open(d + '/ref.fa', 'wb') as f:
    for k, s in ref.items():
        f.write(b'>' + k.encode() + b'\n')
        for i in range(0, len(s), 60):
            f.write(s[i:i + 60] + b'\n')
alt = {65: 'G', 67: 'T', 71: 'A', 84: 'C'}
def vcf(path, n):
    with open(path, 'w') as f:
        f.write('##fileformat=VCFv4.2\n')
        for k, s in ref.items():
            f.write('##contig=<ID=%s,length=%d>\n' % (k, len(s)))
        f.write('#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n')
        per = [n // 2, n - n // 2]
        r2 = random.Random(9)
        for (k, s), m in zip(ref.items(), per):
            for p in sorted(r2.sample(range(100, len(s) - 100), m)):
                b = s[p - 1]
                f.write('%s\t%d\t.\t%s\t%s\t.\t.\t.\n' % (k, p, chr(b), alt[b]))
vcf(d + '/all.vcf', nrec)
vcf(d + '/p10.vcf', max(1, nrec // 10))
vcf(d + '/slice.vcf', max(1, int(nrec * slice_pct / 100)))
# FASTA: famb MB in 1 MB records (the 10% and slice inputs are prefixes)
nrec_fa = max(1, famb)
with open(d + '/all.fa', 'wb') as fa, open(d + '/p10.fa', 'wb') as f10, open(d + '/slice.fa', 'wb') as fs:
    slice_bytes = max(10000, int(famb * 1e6 * slice_pct / 100))
    for i in range(nrec_fa):
        s = seq(1000000)
        rec = b'>r%d\n' % i + b'\n'.join(s[j:j + 80] for j in range(0, len(s), 80)) + b'\n'
        fa.write(rec)
        if i < max(1, nrec_fa // 10): f10.write(rec)
        if i == 0: fs.write(b'>slice\n' + s[:slice_bytes] + b'\n')
EOF
samtools faidx "$D/ref.fa"
for v in all p10 slice; do bgzip -f "$D/$v.vcf"; done

# ---- a tiny model -----------------------------------------------------------------------------
M=$D/model
if [ ! -e "$M/model.safetensors" ]; then
    "$BIN" pretrain -o "$M" --variant ph --d-model 8 --n-layer 1 --d-state 4 --seq-len 64 \
        --batch 2 --steps 2 --val-every 0 -d cpu -t 1 --no-progress "$D/p10.fa" 2>"$D/pretrain.log" ||
        { cat "$D/pretrain.log" >&2; exit 1; }
fi

SC=(score -m "$M" -d cpu -t "$THR" -w 32 --rc none --no-progress)
EM=(embed -m "$M" -d cpu -t "$THR" -w 10000 --rc none --no-progress)

# ---- peak RSS at 10% and 100% (normal build) ---------------------------------------------------
rss_run() { # $1 label, rest: command; prints peak RSS in kB and the wall time
    local label=$1
    shift
    /usr/bin/time -f '%M %e' -o "$D/time.$label" "$@" >/dev/null 2>"$D/err.$label" || return 1
}
for what in score embed; do
    for part in p10 all; do
        if [ $what = score ]; then
            cmd=("$BIN" "${SC[@]}" -f "$D/ref.fa" -o "$D/out_$part.vcf.gz" "$D/$part.vcf.gz")
        else
            cmd=("$BIN" "${EM[@]}" -o "$D/out_$part.npy" "$D/$part.fa")
        fi
        check "$what $part: exit 0" "rss_run ${what}_$part ${cmd[*]@Q}"
        read -r rss wall < <(tail -n 1 "$D/time.${what}_$part" 2>/dev/null) || { rss=0; wall=0; }
        case $rss in '' | *[!0-9]*) rss=0 ;; esac
        eval "rss_${what}_$part=$rss"
        log "$what $part: peak RSS $((rss / 1024)) MB, ${wall} s"
    done
    eval "r10=\$rss_${what}_p10 r100=\$rss_${what}_all"
    check "$what: peak RSS flat (10%: $((r10 / 1024)) MB, 100%: $((r100 / 1024)) MB)" \
        "[ $r100 -gt 0 ] && [ $r100 -le \$(( r10 * 5 / 4 + 32768 )) ]"
done
check "score: every record written" \
    "[ \$(zcat '$D/out_all.vcf.gz' | grep -vc '^#') -eq $NREC ]"
check "embed: one row per 10 kb window" \
    "python3 -c \"import ast; h = open('$D/out_all.npy', 'rb').read(256); n = int.from_bytes(h[8:10], 'little'); d = ast.literal_eval(h[10:10 + n].decode()); assert d['shape'] == ($FAMB * 100, 8), d\""

# ---- ASan + UBSan, whole inputs -------------------------------------------------------------------
san_clean() { ! grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$1"; }
if [[ " $SKIP " != *" asan "* ]]; then
    if [ -x "$SAN" ]; then
        export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
        check "asan score all: exit 0" "rss_run asan_score '$SAN' ${SC[*]@Q} -f '$D/ref.fa' -o '$D/asan.vcf.gz' '$D/all.vcf.gz'"
        check "asan score all: no sanitizer report" "san_clean '$D/err.asan_score'"
        check "asan embed all: exit 0" "rss_run asan_embed '$SAN' ${EM[*]@Q} -o '$D/asan.npy' '$D/all.fa'"
        check "asan embed all: no sanitizer report" "san_clean '$D/err.asan_embed'"
        log "asan: score $(tail -n 1 "$D/time.asan_score" | cut -d' ' -f2) s, embed $(tail -n 1 "$D/time.asan_embed" | cut -d' ' -f2) s"
    else
        echo "skip  asan: $SAN not built (make SANITIZE=1)"
    fi
fi

# ---- valgrind memcheck, a slice -----------------------------------------------------------------
if [[ " $SKIP " != *" valgrind "* ]]; then
    if command -v valgrind >/dev/null; then
        VG=(valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
            --show-leak-kinds=definite,indirect --track-origins=no -q)
        check "valgrind score slice: no error or leak" \
            "OMP_NUM_THREADS=1 rss_run vg_score ${VG[*]@Q} '$BIN' ${SC[*]@Q} -t 1 -f '$D/ref.fa' -o '$D/vg.vcf.gz' '$D/slice.vcf.gz'"
        check "valgrind embed slice: no error or leak" \
            "OMP_NUM_THREADS=1 rss_run vg_embed ${VG[*]@Q} '$BIN' ${EM[*]@Q} -t 1 -o '$D/vg.npy' '$D/slice.fa'"
        grep -h '==[0-9]*==' "$D/err.vg_score" "$D/err.vg_embed" 2>/dev/null | head -n 20 >&2
        log "valgrind: score slice $(tail -n 1 "$D/time.vg_score" | cut -d' ' -f2) s, embed slice $(tail -n 1 "$D/time.vg_embed" | cut -d' ' -f2) s"
    else
        echo "skip  valgrind: not installed"
    fi
fi
echo "load: $nchk checks, $nfail failed (VCF $NREC records, FASTA $FAMB MB, slice $SLICE%)"
[ "$nfail" -eq 0 ]
