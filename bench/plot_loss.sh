#!/bin/sh
# plot_loss.sh: the loss curve of a `mamba-dna pretrain` run as a PNG, with gnuplot (Debian
# package gnuplot-nox). Train loss per update and validation loss (masked-position
# cross-entropy, nats) against tokens seen; validation accuracy on the right axis.
#   sh bench/plot_loss.sh OUTDIR/train.tsv OUT.png [TITLE]
set -eu
tsv=${1:?usage: plot_loss.sh train.tsv out.png [title]}
png=${2:?usage: plot_loss.sh train.tsv out.png [title]}
title=${3:-$(basename "$(dirname "$tsv")")}
command -v gnuplot >/dev/null 2>&1 || { echo "plot_loss.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
[ -r "$tsv" ] || { echo "plot_loss.sh: cannot read $tsv" >&2; exit 2; }
tmp="$png.tmp.$$.png"
gnuplot <<GP
set terminal pngcairo size 1000,600 noenhanced font ",11"
set output "$tmp"
set datafile separator "\t"
set datafile missing "NA"
set key autotitle columnhead below horizontal
set title "$title"
set xlabel "tokens"
set ylabel "cross-entropy (nats)"
set y2label "validation accuracy"
set ytics nomirror
set y2tics
set grid
set format x "%.2s%c"
plot "$tsv" using 2:4 with lines lw 1 lc rgb "#7f9fbf" title "train loss", \
     "" using 2:6 with linespoints lw 2 pt 7 lc rgb "#c0392b" title "validation loss", \
     "" using 2:7 axes x1y2 with linespoints lw 1 pt 5 dt 2 lc rgb "#27ae60" title "validation accuracy"
GP
mv "$tmp" "$png"
echo "$png"
