#!/usr/bin/python3
"""markov_llr.py: the order-k Markov baseline for `mamba-dna score` (bench/score.sh).

Trains an order-k Markov chain (counts of (k+1)-mers, add-one smoothing, A/C/G/T only) on a
reference contig outside a held-out interval, scores every biallelic SNV of a VCF as the
difference of the chain's log-likelihoods of the alt and ref sequences (the k+1 terms whose
(k+1)-mer covers the variant), and prints the AUROC of separating common (AF > 5%) from rare
(AF < 0.5%) SNVs for that LLR and for MAMBA_LLR (read from the VCF's INFO or from a score table
given with --scores). AUROC = P(score of a common SNV > score of a rare one), ties counted half
(Mann-Whitney); 0.5 is chance.

usage: markov_llr.py --fasta 20.fa.gz --vcf chr20.vcf.gz [--scores scored.tsv.gz] [--k 6]
                     [--holdout 20:900000-4100000]
Output (TSV on stdout): score  n_rare  n_common  auroc
"""
import argparse
import gzip
import sys

import numpy as np
import pysam

CODE = np.full(256, 4, dtype=np.uint8)
for i, c in enumerate(b'ACGT'):
    CODE[c] = i
    CODE[c + 32] = i


def train(codes, k, hold):
    """(k+1)-mer counts over codes outside the hold [beg, end) interval (0-based)."""
    n = len(codes)
    K = k + 1
    counts = np.zeros(4 ** K, dtype=np.int64)
    step = 1 << 23
    for s in range(0, n - K + 1, step):
        e = min(n - K + 1, s + step)
        idx = np.zeros(e - s, dtype=np.int64)
        ok = np.ones(e - s, dtype=bool)
        for j in range(K):
            c = codes[s + j:e + j].astype(np.int64)
            ok &= c < 4
            idx = idx * 4 + np.minimum(c, 3)
        pos = np.arange(s, e)
        ok &= (pos + K <= hold[0]) | (pos >= hold[1])
        counts += np.bincount(idx[ok], minlength=4 ** K)
    c = counts.reshape(4 ** k, 4).astype(np.float64) + 1.0
    return np.log(c) - np.log(c.sum(axis=1, keepdims=True))   # [context, next base]


def chain_ll(logp, k, s):
    """Log-likelihood of the last len(s)-k bases of code array s given their k predecessors."""
    ll = 0.0
    for t in range(k, len(s)):
        ctx = 0
        for j in range(t - k, t):
            ctx = ctx * 4 + int(s[j])
        ll += logp[ctx, s[t]]
    return ll


def markov_llr(logp, k, codes, p, ref, alt):
    if p - k < 0 or p + k + 1 > len(codes):
        return None
    w = codes[p - k:p + k + 1].copy()
    if (w >= 4).any() or w[k] != ref:
        return None
    a = w.copy()
    a[k] = alt
    return chain_ll(logp, k, a) - chain_ll(logp, k, w)


def auroc(pos, neg):
    """P(pos > neg) + 0.5 P(pos == neg), through average ranks."""
    x = np.concatenate([pos, neg])
    order = np.argsort(x, kind='mergesort')
    ranks = np.empty(len(x))
    xs = x[order]
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    r = ranks[:len(pos)].sum()
    return (r - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--fasta', required=True)
    ap.add_argument('--vcf', required=True)
    ap.add_argument('--scores', help='mamba-dna score --tsv table (else INFO/MAMBA_LLR of --vcf)')
    ap.add_argument('--k', type=int, default=6)
    ap.add_argument('--holdout', default='20:900000-4100000', help='region left out of training')
    ap.add_argument('--rare', type=float, default=0.005)
    ap.add_argument('--common', type=float, default=0.05)
    a = ap.parse_args()
    pysam.set_verbosity(0)
    chrom, rng = a.holdout.split(':')
    hb, he = (int(x.replace(',', '')) for x in rng.split('-'))
    fa = pysam.FastaFile(a.fasta)
    codes = CODE[np.frombuffer(fa.fetch(chrom).encode(), dtype=np.uint8)]
    logp = train(codes, a.k, (hb - 1, he))
    table = {}
    if a.scores:
        with gzip.open(a.scores, 'rt') as f:
            for line in f:
                if line.startswith('#'):
                    continue
                r = line.rstrip('\n').split('\t')
                if r[4] != '.':
                    table[(r[0], int(r[1]), r[2], r[3])] = float(r[4])
    rare = {'MAMBA_LLR': [], 'markov': []}
    common = {'MAMBA_LLR': [], 'markov': []}
    for rec in pysam.VariantFile(a.vcf):
        if rec.chrom != chrom or not rec.alts or len(rec.alts) != 1:
            continue
        ref, alt = rec.ref.upper(), rec.alts[0].upper()
        if len(ref) != 1 or len(alt) != 1 or ref not in 'ACGT' or alt not in 'ACGT':
            continue
        af = rec.info.get('AF')
        af = af[0] if isinstance(af, tuple) else af
        if af is None or not (af < a.rare or af > a.common):
            continue
        if a.scores:
            m = table.get((rec.chrom, rec.pos, rec.ref, rec.alts[0]))
        else:
            v = rec.info.get('MAMBA_LLR')
            m = v[0] if v else None
        mk = markov_llr(logp, a.k, codes, rec.pos - 1, 'ACGT'.index(ref), 'ACGT'.index(alt))
        if m is None or mk is None:
            continue
        d = rare if af < a.rare else common
        d['MAMBA_LLR'].append(m)
        d['markov'].append(mk)
    print('score\tn_rare\tn_common\tauroc')
    for name, key in (('MAMBA_LLR', 'MAMBA_LLR'), ('markov-k%d' % a.k, 'markov')):
        p, n = np.array(common[key]), np.array(rare[key])
        if len(p) == 0 or len(n) == 0:
            print('%s\t%d\t%d\tNA' % (name, len(n), len(p)))
            continue
        print('%s\t%d\t%d\t%.4f' % (name, len(n), len(p), auroc(p, n)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
