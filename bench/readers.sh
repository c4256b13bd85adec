#!/bin/sh
# readers.sh BUILD_DIR: reader throughput (not a timed test). Compiles bench/bench_reader.c
# against BUILD_DIR/libmambadna.a, then times, best of $BENCH_REPEAT runs (default 5):
#   1. a bgzipped FASTA streamed into tokenized windows  vs  bgzip -dc FILE > /dev/null
#   2. a BAM streamed into read tokens                   vs  samtools fasta -@N FILE > /dev/null
# with 0 and each of $BENCH_THREADS (default: nproc - 1, at least 1) extra decompression threads
# on both sides. Inputs: $BENCH_FASTA (default data/hg37/20.fa.gz, GRCh37 chr20 from
# tests/fetch-data.sh) and $BENCH_BAM (default data/reads/sirv.bam); synthetic files are made in a
# temporary directory when absent. $BENCH_READER names a prebuilt bench_reader (then nothing is
# compiled; used to run the same comparison on another machine).
set -e
BUILD=${1:-build}
cd "$(dirname "$0")/.."
REPEAT=${BENCH_REPEAT:-5}
NT=${BENCH_THREADS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
BR=${BENCH_READER:-$BUILD/bench/bench_reader}
if [ -z "$BENCH_READER" ]; then
    LIB=$BUILD/libmambadna.a
    [ -f "$LIB" ] || { echo "readers.sh: $LIB not found; run make first" >&2; exit 1; }
    mkdir -p "$BUILD/bench"
    ${CC:-gcc} -std=gnu11 -Wall -Wextra -O3 -march=x86-64-v2 -Ilib -Iformats -o "$BR" \
        bench/bench_reader.c "$LIB" -lhts -ljansson -lopenblas -lz -lm -lpthread -fopenmp
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/md-bench-readers.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

# best wall-clock seconds of $REPEAT runs of "$@" (stdout discarded)
best() {
    b=
    i=0
    while [ $i -lt "$REPEAT" ]; do
        t0=$(date +%s.%N)
        "$@" > /dev/null 2>&1
        t1=$(date +%s.%N)
        b=$(echo "$t0 $t1 ${b:-1e9}" | awk '{ d = $2 - $1; print (d < $3) ? d : $3 }')
        i=$((i + 1))
    done
    echo "$b"
}
rate() { echo "$1 $2" | awk '{ printf "%.1f", $1 / $2 / 1e6 }'; }
pct() { echo "$1 $2" | awk '{ printf "%.0f%%", 100 * $1 / $2 }'; }

FA=${BENCH_FASTA:-data/hg37/20.fa.gz}
[ -f "$FA" ] || [ -n "$BENCH_FASTA" ] || FA=data/vt/20.fa.gz
if [ ! -f "$FA" ]; then
    echo "== $FA absent (run make data): using a synthetic 50 Mb FASTA"
    FA=$TMP/synthetic.fa.gz
    awk 'BEGIN { srand(1); print ">synthetic"; s = "ACGTACGTNacgt"; for (i = 0; i < 50e6 / 60; i++) {
        l = ""; for (j = 0; j < 60; j++) l = l substr(s, int(rand() * 13) + 1, 1); print l } }' |
        bgzip -c > "$FA"
fi
BAM=${BENCH_BAM:-data/reads/sirv.bam}
if [ ! -f "$BAM" ]; then
    echo "== $BAM absent (run make data): using a synthetic BAM of 200,000 x 150 bp reads"
    BAM=$TMP/synthetic.bam
    awk 'BEGIN { srand(2); OFS = "\t"; print "@HD", "VN:1.6"; for (i = 0; i < 200000; i++) {
        s = ""; for (j = 0; j < 150; j++) s = s substr("ACGT", int(rand() * 4) + 1, 1);
        q = s; gsub(/./, "I", q); print "r" i, (i % 2) ? 20 : 4, "*", 0, 0, "*", "*", 0, 0, s, q } }' |
        samtools view -b -o "$BAM" -
fi

echo "== readers: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); best of $REPEAT runs"
echo "-- FASTA $FA -> Caduceus tokens in 1024-token windows"
BYTES=$(bgzip -dc "$FA" | wc -c)
BASES=$("$BR" "$FA" | sed 's/.*bases=\([0-9]*\).*/\1/')
TB=$(best bgzip -dc "$FA")
echo "bgzip -dc                : $TB s  $(rate "$BYTES" "$TB") MB/s (decompressed bytes)"
for t in $NT; do
    TB2=$(best bgzip -dc -@ "$t" "$FA")
    echo "bgzip -dc -@ $t            : $TB2 s  $(rate "$BYTES" "$TB2") MB/s"
done
for t in 0 $NT; do
    T=$(best "$BR" -t "$t" "$FA")
    echo "bench_reader -t $t        : $T s  $(rate "$BASES" "$T") MB/s (bases)  = $(pct "$TB" "$T") of bgzip -dc speed (target >= 80%)"
done

echo "-- BAM $BAM -> Caduceus tokens per read"
BASES=$("$BR" -w 0 "$BAM" | sed 's/.*bases=\([0-9]*\).*/\1/')
for t in 0 $NT; do
    TS=$(best samtools fasta -@ "$t" "$BAM")
    T=$(best "$BR" -w 0 -t "$t" "$BAM")
    echo "samtools fasta -@ $t     : $TS s  $(rate "$BASES" "$TS") MB/s"
    echo "bench_reader -w 0 -t $t   : $T s  $(rate "$BASES" "$T") MB/s  = $(pct "$TS" "$T") of samtools fasta speed (target >= 100%)"
done
