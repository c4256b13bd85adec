"""Snakemake wrapper for `mamba-dna embed`: embeddings of FASTA/FASTQ records, regions of an
indexed FASTA, or SAM/BAM/CRAM reads, written as OUT.npy (float32 rows) + OUT.npy.bed (one line
per row block: chrom/name, start, end, name, score, strand, first row, rows) + OUT.npy.json
(provenance). mamba-dna writes them under temporary names and renames them when complete.

params.regions: a list of "chr:beg-end" regions (1-based, inclusive), or input.regions: a BED
file; window, stride, pooling and the rest go in params.extra ("-w 512 -s 256 --pool mean").
"""

__author__ = "mamba-dna developers"
__license__ = "MIT"

import shlex

from snakemake.shell import shell

q = shlex.quote


def sequence_input(inp):
    """input.seq, or input.fasta / input[0] (a FASTA given with its .fai/.gzi in one list)."""
    seq = inp.get("seq") or inp.get("fasta") or inp[0]
    seqs = [seq] if isinstance(seq, str) else list(seq)
    seqs = [s for s in seqs if not s.endswith((".fai", ".gzi", ".bai", ".crai", ".csi"))]
    if not seqs:
        raise ValueError("mamba_dna/embed: no sequence input (only index files)")
    return seqs


seqs = sequence_input(snakemake.input)
out = snakemake.output.get("npy") or snakemake.output[0]
if not out.endswith(".npy"):
    raise ValueError(f"mamba_dna/embed: the first output must end in .npy, not '{out}'")
for side in snakemake.output:
    if side != out and side not in (out + ".bed", out + ".json"):
        raise ValueError(f"mamba_dna/embed: unexpected output '{side}' (mamba-dna writes "
                         f"{out}, {out}.bed and {out}.json)")
binary = snakemake.params.get("mamba_dna", "mamba-dna")
model = snakemake.params.get("model", "")
device = snakemake.params.get("device", "")
regions = snakemake.params.get("regions", []) or []
if isinstance(regions, str):
    regions = [regions]
regions_bed = snakemake.input.get("regions", "")
extra = snakemake.params.get("extra", "")

for opt in shlex.split(extra):
    name = opt.split("=", 1)[0]
    if name in ("-o", "--output", "-t", "--threads", "-r", "--region", "-R", "--regions-file"):
        raise ValueError(f"mamba_dna/embed: give {name} through the rule (output, threads, "
                         f"params.regions, input.regions), not params.extra")

opts = []
if model:
    opts.append(f"-m {q(model)}")
if device:
    opts.append(f"-d {q(device)}")
opts.append(f"-t {snakemake.threads}")
opts += [f"-r {q(r)}" for r in regions]
if regions_bed:
    opts.append(f"-R {q(regions_bed)}")
opts = " ".join(opts)
seqs = " ".join(q(s) for s in seqs)

log = snakemake.log_fmt_shell(stdout=False, stderr=True)
shell("{binary_q} embed {opts} {extra} -o {out_q} {seqs} {log}", binary_q=q(binary), out_q=q(out))
