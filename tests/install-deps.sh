#!/bin/sh
# Installs the Debian packages that building and testing mamba-dna need, when any is missing.
# Runs apt-get only as root; otherwise it names what to install and fails.
set -e
PKGS="gcc make libhts-dev zlib1g-dev libopenblas-dev libjansson-dev libcmocka-dev libssl-dev \
      samtools bcftools tabix python3 python3-numpy python3-pysam snakemake clang libclang-rt-14-dev gnuplot-nox"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing:$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "missing Debian packages:$missing (run: sudo apt-get install$missing)" >&2
    exit 1
fi
