"""Snakemake wrapper for `mamba-dna score`: zero-shot variant effect scores (INFO MAMBA_LLR,
MAMBA_EMBDIST) added to every record of a VCF/BCF.

With params.region the records whose POS lies in the region are scored (selected with
`bcftools view -r REGION --regions-overlap 0` through a pipe): the form a scatter job needs, since
a deletion that starts in the previous tile then belongs to that tile only. The output type
follows the output name (.vcf, .vcf.gz, .bcf), as in bcftools; mamba-dna writes it under a
temporary name and renames it when complete, so a failed job leaves no file that looks finished.
"""

__author__ = "mamba-dna developers"
__license__ = "MIT"

import os
import shlex

from snakemake.shell import shell

q = shlex.quote


def first_fasta(ref):
    """input.ref may be the FASTA alone or [FASTA, .fai, .gzi]."""
    refs = [ref] if isinstance(ref, str) else list(ref)
    for r in refs:
        if not r.endswith((".fai", ".gzi")):
            return r
    raise ValueError("mamba_dna/score: input.ref holds no FASTA (only index files)")


vcf = snakemake.input.get("vcf") or snakemake.input[0]
ref = first_fasta(snakemake.input.ref)
out = snakemake.output.get("vcf") or snakemake.output[0]
index = snakemake.output.get("idx", "")
binary = snakemake.params.get("mamba_dna", "mamba-dna")
model = snakemake.params.get("model", "")
device = snakemake.params.get("device", "")
region = snakemake.params.get("region", "")
extra = snakemake.params.get("extra", "")

for opt in shlex.split(extra):
    name = opt.split("=", 1)[0]
    if name in ("-o", "--output", "-O", "--output-type", "-t", "--threads", "-f", "--fasta-ref",
                "-r", "--regions", "-R", "--regions-file", "--write-index"):
        raise ValueError(f"mamba_dna/score: give {name} through the rule (output, threads, "
                         f"input.ref, params.region, output.idx), not params.extra")
if index and not index.endswith((".tbi", ".csi")):
    raise ValueError(f"mamba_dna/score: output.idx '{index}' must end in .tbi or .csi")
if index and index not in (out + ".tbi", out + ".csi"):
    raise ValueError(f"mamba_dna/score: output.idx must be {out}.tbi or {out}.csi")

opts = []
if model:
    opts.append(f"-m {q(model)}")
if device:
    opts.append(f"-d {q(device)}")
opts.append(f"-t {snakemake.threads}")
if index:
    opts.append("--write-index" + ("=tbi" if index.endswith(".tbi") else ""))
opts = " ".join(opts)

log = snakemake.log_fmt_shell(stdout=False, stderr=True)

if region:
    # The records reach mamba-dna on stdin, so its messages name "stdin": say where they come from.
    shell(
        "(echo '[mamba_dna/score] records of '{vcf_q}' with POS in '{region_q}' (on stdin below)' >&2;"
        " bcftools view --no-version -r {region_q} --regions-overlap 0 -O u {vcf_q}"
        " | {binary_q} score {opts} -f {ref_q} {extra} -o {out_q} -) {log}",
        region_q=q(region), vcf_q=q(vcf), binary_q=q(binary), ref_q=q(ref), out_q=q(out),
    )
else:
    shell("{binary_q} score {opts} -f {ref_q} {extra} -o {out_q} {vcf_q} {log}",
          binary_q=q(binary), ref_q=q(ref), out_q=q(out), vcf_q=q(vcf))
