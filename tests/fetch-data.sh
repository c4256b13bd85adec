#!/bin/sh
# fetch-data.sh (`make data`): fetches real DNA, reads and variants from pinned Debian bookworm
# packages (apt-get download + dpkg -x; nothing is installed), repairs Debian's double compression,
# builds the indexes and checks every produced file against the sha256 recorded below.
# Layout: data/debs/*.deb, data/x/<package>/ (unpacked), data/{hg37,1kg,lambda,reads,freebayes}/.
# Usage: sh tests/fetch-data.sh [--print-manifest] [SET...]  SET: hg37 1kg lambda reads freebayes
set -u

# Pinned packages (name, version): the bookworm candidates that `apt-cache policy` showed in
# November 2026. apt-get checks each download against the archive's signed hashes.
PKGS='
vt-examples       0.57721+ds-3
smalt-examples    0.7.6-12
shapeit4-example  4.2.2+dfsg-1
bowtie2-examples  2.5.0-3
pinfish-examples  0.1.0+ds-3
freebayes         1.3.6-2
'

# Manifest: file under data/, sha256 of its bytes, and for files that this script compresses
# itself the sha256 of the decompressed stream ("-" otherwise). Bytes made by bgzip or an indexer
# depend on the htslib version (these are from htslib/samtools/bcftools 1.16): a compressed file
# whose bytes differ is accepted when its content matches; an index whose bytes differ is
# accepted when it is newer than its data file and loads (both reported in the summary).
MANIFEST='
hg37/20.fa.gz                          83c80b3fb23822ff0a66f26306e46f5db3c83d48fcff68bcddc353a3d8ef581b -
hg37/20.fa.gz.fai                      9d25ad9f68b9deeff4a681d2315930ed3ac8a788d873e6fcf9e91c1c1755cabd -
hg37/20.fa.gz.gzi                      eb1a55928180169ef4890ae4b5c259ff62960e877c8070af77ca9d94007f1802 -
hg37/X70.fa.gz                         b70e9a4f3cc54171c5c69470f6ad2b379c926a640ea91a2a28a7c6b912dfa591 f9ce73a8cbd6bd8622e845f003076e95914c0144558ddb8119016be0e8d9c3fd
hg37/X70.fa.gz.fai                     421444e9dd9f346c36f4dd8d9e48e585f6ce28d78d77e4b94e8281ac26384745 -
hg37/X70.fa.gz.gzi                     e9554b4779646d2c2680890bbf16d9e9af9d1956c362d5ed4036eb595de6add7 -
1kg/chr20.vcf.gz                       20afe8b05faafd482c2f134a1a43aaa8aa839f2f37646b68fe080d015d1f8515 -
1kg/chr20.vcf.gz.csi                   612a283850e1b8461a35c2fa3bf4a3fde5cdb2c334d9cae2c99848e9b1807b3d -
1kg/chr20.vcf.gz.tbi                   fbb0a50c13f3a4e7f3b0c78b3140498aa33cad5d6004d7002061349bf8516246 -
1kg/chr20.bcf                          4d2b9fecca2fc8b43913ed497c450a9e6d8eeadecba3ebd5616dcb3187d5f44b -
1kg/chr20.bcf.csi                      eae409a7c3c537788ca74e13aaede53198b8c9fc228b5f727231ef5216a7f18f -
lambda/lambda.fa.gz                    078f0418a5d496c05873e70ab223e49eda1eece8ebca3cf55392bd6752cc33e4 0a04f81952deb68c204e8ae67e0573cb97d348f18ab1b527630d57c294028cf5
lambda/lambda.fa.gz.fai                e5fd1c38725e35e7c9fac226e1461db9d21429afba24a4cc1155f210d348ae04 -
lambda/lambda.fa.gz.gzi                af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc -
reads/sirv.bam                         bb745c5829aa4d7f40a9d19071371d1b891541100f0ff39902ebd69a8ef6de58 -
reads/sirv.bam.bai                     24032ea67c309fe4d42b1cfec5160d8088b07bd16c3e9921c25a8a77b4a37964 -
reads/sirv.fa.gz                       492b19f5d13975b8ae8e88a85d98355100b79556f4c061453ccd3d3106a54bd1 659a223e2252fd4bfa73a3e35baac13b320590e765169e4252abf74ddf8b9b1e
reads/sirv.fa.gz.fai                   1b151b13cf8dac4e2503c5b14bf580eebf277e7af6fdd3ea00482d1d57527cb5 -
reads/sirv.fa.gz.gzi                   2a1d4ec090aac5256dfa1c09ac1f42fb406f877a3c8b2dc3299eaccd8673ba54 -
freebayes/NA12878.chr22.tiny.bam       54178b80e198abe7398b3ca5ccc12009b38c466c8ff63794fc030d7f279031a7 -
freebayes/NA12878.chr22.tiny.bam.bai   97e896d317cbd982f3e1d545ea00ae1e73aa8e8bc7d0f32da4c20c5b6525a95d -
freebayes/NA12878.chr22.tiny.cram      14471d867ea080b4c64117664a393adf7336cd74a70c1b08612b4a8342611454 -
freebayes/NA12878.chr22.tiny.cram.crai a88b525f407579a13e12724459d722cbf0357a250dbdcfaf01b7d6f121fb24e9 -
freebayes/NA12878.chr22.tiny.giab.vcf  90cb4fd80c518dca669c78318ec2792f21c627967346893dff3ff27a2962af21 -
freebayes/q.fa                         07ac3fae2b27ae6415165e9bbda7af88247035fa2d0faf275b2320b0a818093d -
freebayes/q.fa.fai                     fea5eae895edc08c4a21e7d432782c6b9542674ccfc77650c99e84e5bea84757 -
freebayes/q.vcf.gz                     dccad4d0c28f75ade1f0dc85cba7396e04067fa104157e2d6e93628a2f48503e -
freebayes/q.vcf.gz.tbi                 81fcc0b47951f2af1ebe5c3e298f9c24158d7dafbbffdf181d08ac002fdf8c97 -
'

cd "$(dirname "$0")/.." || exit 1
DATA=data
DEBS=$DATA/debs
X=$DATA/x
SUMMARY=''
NFAIL=0
PRINT_MANIFEST=0

say()  { echo "fetch-data: $*" >&2; }
die()  { echo "fetch-data: error: $*" >&2; exit 1; }
sha()  { sha256sum "$1" | cut -d' ' -f1; }
zsha() { bgzip -dc "$1" 2>/dev/null | sha256sum | cut -d' ' -f1; }
size() { wc -c < "$1" | tr -d ' '; }

row() { # row FILE STATUS
    SUMMARY="$SUMMARY$(printf '%-40s %11s  %s' "$1" "$(size "$DATA/$1" 2>/dev/null || echo -)" "$2")
"
}

# --- packages -------------------------------------------------------------------------------
pkg_version() { echo "$PKGS" | awk -v p="$1" '$1 == p { print $2 }'; }

# deb_path NAME: the downloaded .deb of the pinned version (any architecture), or nothing.
deb_path() {
    v=$(pkg_version "$1")
    for f in "$DEBS/$1_$(echo "$v" | sed 's/:/%3a/')_"*.deb; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

apt_download() { # in $DEBS; the sandbox option only silences apt's warning about _apt when root
    if [ "$(id -u)" = 0 ]; then
        (cd "$DEBS" && apt-get -q download -o APT::Sandbox::User=root "$1=$2")
    else
        (cd "$DEBS" && apt-get -q download "$1=$2")
    fi
}

fetch_pkg() { # fetch_pkg NAME: download (if needed) and unpack (if needed) into $X/NAME
    name=$1
    ver=$(pkg_version "$name")
    [ -n "$ver" ] || die "no pinned version for package $name"
    mkdir -p "$DEBS" "$X" || die "cannot create $DEBS"
    if ! deb=$(deb_path "$name"); then
        say "downloading $name=$ver"
        if ! apt_download "$name" "$ver" >/dev/null; then
            if [ "$(id -u)" = 0 ]; then
                say "apt-get download failed; refreshing the package lists (apt-get update) and retrying"
                apt-get -q update >/dev/null || die "apt-get update failed"
                apt_download "$name" "$ver" >/dev/null || die "cannot download $name=$ver from the Debian archive"
            else
                die "cannot download $name=$ver (if the package lists are missing, run: sudo apt-get update)"
            fi
        fi
        deb=$(deb_path "$name") || die "apt-get download did not produce a .deb for $name=$ver"
    fi
    stamp="$X/$name/.unpacked-from"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(basename "$deb")" ]; then
        return 0
    fi
    say "unpacking $(basename "$deb")"
    rm -rf "${X:?}/${name:?}"
    if ! dpkg -x "$deb" "$X/$name"; then
        rm -rf "${X:?}/${name:?}"
        rm -f "$deb"
        die "dpkg -x $deb failed; removed it (a damaged download?): run again to fetch it anew"
    fi
    basename "$deb" > "$stamp"
}

# --- verification ---------------------------------------------------------------------------
man_field() { echo "$MANIFEST" | awk -v p="$1" -v f="$2" '$1 == p { print $f }'; }

index_data() { # the data file an index belongs to
    case $1 in
        *.gzi|*.tbi|*.csi|*.bai|*.crai) echo "${1%.*}" ;;   # a .fai is plain text: exact
        *) return 1 ;;
    esac
}

index_loads() { # index_loads DATAFILE INDEXFILE: a query through the index works
    case $2 in
        *.gzi)       [ -f "$1.fai" ] && samtools faidx --fai-idx "$1.fai" --gzi-idx "$2" "$1" \
                         "$(head -n1 "$1.fai" | cut -f1):1-10" >/dev/null 2>&1 ;;
        *.tbi)       tabix -l "$1" >/dev/null 2>&1 ;;
        *.csi)       bcftools index -n "$1" >/dev/null 2>&1 ;;
        *.bai|*.crai) samtools idxstats "$1" >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

# verify PATH: prints the status word; 0 when acceptable
verify() {
    p=$1
    f=$DATA/$p
    want=$(man_field "$p" 2)
    wantc=$(man_field "$p" 3)
    [ -f "$f" ] || { echo missing; return 1; }
    [ -s "$f" ] || { echo empty; return 1; }
    got=$(sha "$f")
    if [ "$PRINT_MANIFEST" = 1 ]; then
        c=-; [ "$wantc" != - ] && c=$(zsha "$f")
        printf '%-38s %s %s\n' "$p" "$got" "$c" >&2
    fi
    [ "$got" = "$want" ] && { echo ok; return 0; }
    if [ -n "$wantc" ] && [ "$wantc" != - ] && [ "$(zsha "$f")" = "$wantc" ]; then
        echo "ok(content)"; return 0
    fi
    if d=$(index_data "$p") && [ -f "$DATA/$d" ] && [ -n "$(find "$f" -newer "$DATA/$d")" ] \
        && index_loads "$DATA/$d" "$f"; then
        echo "ok(index-rebuilt)"; return 0
    fi
    echo "SHA256-MISMATCH"
    return 1
}

# --- building -------------------------------------------------------------------------------
# out PATH RECIPE [ARGS]: unless data/PATH exists and verifies, runs "RECIPE ARGS TMP" to build it
# under a temporary name in the same directory, renames it, and verifies it.
out() {
    p=$1; shift
    f=$DATA/$p
    [ -n "$(man_field "$p" 1)" ] || die "$p: not in the manifest"
    if st=$(verify "$p"); then row "$p" "$st (kept)"; return 0; fi
    [ "$st" = missing ] || say "$p: $st, rebuilding it"
    mkdir -p "$(dirname "$f")" || die "cannot create $(dirname "$f")"
    tmp="$f.tmp$$"
    if ! "$@" "$tmp"; then
        rm -f "$tmp" "$tmp".*
        die "$p: building it failed ($1)"
    fi
    mv -f "$tmp" "$f" || { rm -f "$tmp"; die "$p: cannot rename $tmp"; }
    if st=$(verify "$p"); then
        row "$p" "$st"
    else
        row "$p" "$st"
        say "$p: $st (expected $(man_field "$p" 2))"
        NFAIL=$((NFAIL + 1))
    fi
}

src() { # src PKG RELPATH: a file inside an unpacked package, which must exist
    s="$X/$1/$2"
    [ -f "$s" ] || { say "missing in package $1: $2"; return 1; }
    echo "$s"
}

r_copy()   { s=$(src "$1" "$2") && cp "$s" "$3"; }
r_gunzip() { s=$(src "$1" "$2") && gzip -dc "$s" > "$3"; }
r_bgzip()  { s=$(src "$1" "$2") && gzip -t "$s" && gzip -dc "$s" | bgzip -c > "$3"; }
r_fai()    { samtools faidx --fai-idx "$2" --gzi-idx "$2.gzi" "$DATA/$1" && rm -f "$2.gzi"; }
r_gzi()    { bgzip -r -I "$2" "$DATA/$1"; }
r_csi()    { bcftools index -c -o "$2" "$DATA/$1"; }
r_tbi()    { bcftools index -t -o "$2" "$DATA/$1"; }
r_bai()    { samtools index -b -o "$2" "$DATA/$1"; }
r_crai()   { samtools index -o "$2" "$DATA/$1"; }

# --- the data sets --------------------------------------------------------------------------
set_hg37() {
    fetch_pkg vt-examples
    fetch_pkg smalt-examples
    vt=usr/share/doc/vt/examples/ref
    # GRCh37 chr20, complete: already BGZF with .fai; Debian gzipped the .gzi a second time.
    out hg37/20.fa.gz      r_copy   vt-examples "$vt/20.fa.gz"
    out hg37/20.fa.gz.fai  r_copy   vt-examples "$vt/20.fa.gz.fai"
    out hg37/20.fa.gz.gzi  r_gunzip vt-examples "$vt/20.fa.gz.gzi.gz"
    # GRCh37 chrX, first 70 Mb: plain gzip, so recompress with bgzip for faidx.
    out hg37/X70.fa.gz     r_bgzip  smalt-examples usr/share/doc/smalt/test/data/hs37chrXtrunc.fa.gz
    out hg37/X70.fa.gz.fai r_fai    hg37/X70.fa.gz
    out hg37/X70.fa.gz.gzi r_gzi    hg37/X70.fa.gz
}

set_1kg() {
    fetch_pkg shapeit4-example
    t=usr/share/doc/shapeit4/examples/test
    # 1000 Genomes phase 3, chr20:1,000,226-3,999,849, 300 samples; BGZF VCF as shipped. The BCF
    # was gzipped a second time by Debian. Indexes are rebuilt rather than trusted.
    out 1kg/chr20.vcf.gz     r_copy   shapeit4-example "$t/reference.vcf.gz"
    out 1kg/chr20.vcf.gz.csi r_csi    1kg/chr20.vcf.gz
    out 1kg/chr20.vcf.gz.tbi r_tbi    1kg/chr20.vcf.gz
    out 1kg/chr20.bcf        r_gunzip shapeit4-example "$t/reference.bcf.gz"
    out 1kg/chr20.bcf.csi    r_csi    1kg/chr20.bcf
}

set_lambda() {
    fetch_pkg bowtie2-examples
    out lambda/lambda.fa.gz     r_bgzip bowtie2-examples usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz
    out lambda/lambda.fa.gz.fai r_fai   lambda/lambda.fa.gz
    out lambda/lambda.fa.gz.gzi r_gzi   lambda/lambda.fa.gz
}

set_reads() {
    fetch_pkg pinfish-examples
    d=usr/share/doc/pinfish-examples
    # Real ONT cDNA reads on SIRV spike-ins; the BAM was gzipped a second time by Debian.
    out reads/sirv.bam        r_gunzip pinfish-examples "$d/sirv_e0_sorted.bam.gz"
    out reads/sirv.bam.bai    r_bai    reads/sirv.bam
    out reads/sirv.fa.gz      r_bgzip  pinfish-examples "$d/SIRV_150601a.fasta.gz"
    out reads/sirv.fa.gz.fai  r_fai    reads/sirv.fa.gz
    out reads/sirv.fa.gz.gzi  r_gzi    reads/sirv.fa.gz
}

set_freebayes() {
    fetch_pkg freebayes
    t=usr/share/doc/freebayes/examples/tiny
    # NA12878 on a 12.5 kb piece of chr22 named "q": BAM, CRAM, reference, calls and GIAB truth.
    out freebayes/NA12878.chr22.tiny.bam       r_copy freebayes "$t/NA12878.chr22.tiny.bam"
    out freebayes/NA12878.chr22.tiny.bam.bai   r_bai  freebayes/NA12878.chr22.tiny.bam
    out freebayes/q.fa                         r_copy freebayes "$t/q.fa"
    out freebayes/q.fa.fai                     r_copy freebayes "$t/q.fa.fai"
    out freebayes/NA12878.chr22.tiny.cram      r_copy freebayes "$t/NA12878.chr22.tiny.cram"
    out freebayes/NA12878.chr22.tiny.cram.crai r_crai freebayes/NA12878.chr22.tiny.cram
    out freebayes/NA12878.chr22.tiny.giab.vcf  r_copy freebayes "$t/NA12878.chr22.tiny.giab.vcf"
    out freebayes/q.vcf.gz                     r_copy freebayes "$t/q.vcf.gz"
    out freebayes/q.vcf.gz.tbi                 r_tbi  freebayes/q.vcf.gz
}

# --- main -----------------------------------------------------------------------------------
SETS=''
for a in "$@"; do
    case $a in
        --print-manifest) PRINT_MANIFEST=1 ;;
        hg37|1kg|lambda|reads|freebayes) SETS="$SETS $a" ;;
        -h|--help) sed -n '2,6s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown data set '$a' (known: hg37 1kg lambda reads freebayes)" ;;
    esac
done
[ -n "$SETS" ] || SETS='hg37 1kg lambda reads freebayes'

for t in apt-get dpkg gzip bgzip tabix samtools bcftools sha256sum awk; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (Debian packages: apt dpkg gzip tabix samtools bcftools coreutils)"
done
mkdir -p "$DATA" || die "cannot create $DATA/"

for s in $SETS; do
    say "== $s"
    "set_$s"
done

printf '\n%-40s %11s  %s\n' "file (under data/)" "bytes" "sha256"
printf '%s' "$SUMMARY"
if [ "$NFAIL" -gt 0 ]; then
    say "$NFAIL file(s) failed the sha256 check"
    exit 1
fi
say "all files present and verified"
