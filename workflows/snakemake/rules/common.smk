# common.smk: configuration, regions and chunk tables of the mamba-dna workflow (included by the
# Snakefile). Chunks are cut from the FASTA index (.fai) at parse time:
#   SCORE_CHUNKS[name] = {chunk_id: "chr:beg-end"}      one `mamba-dna score` job each
#   EMBED_CHUNKS[name] = {chunk_id: ["chr:beg-end", ...]} one `mamba-dna embed` job each
# chunk_id = "00003-20-41161-61740": a sortable index, so gathering in id order keeps the order.

import os
import re
import subprocess
import sys

from snakemake.exceptions import WorkflowError

OUT = config.get("outdir", "results").rstrip("/")
BIN = config.get("mamba_dna", "mamba-dna")
REF = config.get("reference", "")
MODEL = config.get("model", "") or ""
DEVICE = config.get("device", "auto")
THREADS = int(config.get("threads", 4))
MEM_MB = int(config.get("mem_mb", 8000))
RUNTIME = int(config.get("runtime", 240))
GPU = 0 if DEVICE == "cpu" else int(config.get("gpus_per_job", 1))
SC = config.get("score", {}) or {}
EC = config.get("embed", {}) or {}
WRAPPERS = f"file:{os.path.join(workflow.basedir, 'wrappers', 'mamba_dna')}"
MERGE_EMBED = os.path.join(workflow.basedir, "scripts", "merge_embed.py")


def fail(msg):
    raise WorkflowError(f"mamba-dna workflow: {msg}")


# ---- regions --------------------------------------------------------------------------------


def read_fai(fasta):
    """[(contig, length)] in the order of FASTA's .fai (made with `samtools faidx`)."""
    fai = f"{fasta}.fai"
    if not os.path.exists(fai):
        fail(f"{fasta}: no index {fai}; run `samtools faidx {fasta}` (bgzip the FASTA, not gzip)")
    with open(fai) as fh:
        return [(f[0], int(f[1])) for f in (line.rstrip("\n").split("\t") for line in fh) if f[0]]


def region_str(contig, beg=None, end=None):
    """htslib region syntax, 1-based inclusive; braces when the name itself has a colon."""
    name = f"{{{contig}}}" if ":" in contig else contig
    return name if beg is None else f"{name}:{beg}-{end}"


def tiles(contig, length, size):
    """[(contig, beg, end)] 1-based inclusive tiles of at most size bases (size <= 0: whole)."""
    if size <= 0 or size >= length:
        return [(contig, 1, length)]
    return [(contig, b, min(b + size - 1, length)) for b in range(1, length + 1, size)]


def chunk_id(i, contig, beg, end):
    """A file-name-safe, sortable chunk name: 00003-20-41161-61740."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", contig)[:40]
    tail = "" if beg is None else f"-{beg}-{end}"
    return f"{i:05d}-{safe}{tail}"


def vcf_index(path):
    for ext in (".tbi", ".csi"):
        if os.path.exists(f"{path}{ext}"):
            return f"{path}{ext}"
    fail(f"{path}: no .tbi/.csi index; run `bcftools index -t {path}` (bgzipped VCF) or "
         f"`bcftools index {path}` (BCF)")


def vcf_contigs(path):
    """Contigs that have records, in file order, from the index (`bcftools index -s`)."""
    vcf_index(path)
    p = subprocess.run(["bcftools", "index", "-s", path], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{path}: `bcftools index -s` failed: {p.stderr.strip()}")
    return [line.split("\t")[0] for line in p.stdout.splitlines() if line.strip()]


def score_chunks(vcf):
    """{chunk_id: region}. Contigs in VCF order, tiles in position order, so that concatenating
    the chunks in id order restores the input order. A contig of the VCF that the reference
    lacks still gets one chunk: `mamba-dna score` then stops with its message (e.g. 'chr20' vs
    '20') instead of the records being dropped silently."""
    fai = dict(read_fai(REF))
    mode = SC.get("scatter", "size")
    size = int(SC.get("region_size", 10_000_000)) if mode == "size" else 0
    if mode not in ("size", "contig"):
        fail(f"score.scatter: '{mode}' is not one of size, contig")
    out, i = {}, 0
    for c in vcf_contigs(vcf):
        for contig, beg, end in tiles(c, fai[c], size) if c in fai else [(c, None, None)]:
            out[chunk_id(i, contig, beg, end)] = region_str(contig, beg, end)
            i += 1
    return out


def read_bed(path):
    with open(path) as fh:
        for line in fh:
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            f = line.rstrip("\n").split("\t")
            yield f[0], int(f[1]) + 1, int(f[2])


def embed_chunks(entry):
    """{chunk_id: [region, ...]} for one embed.fasta entry. size: tiles of region_size bases
    (rounded up to a multiple of the stride, so that windows line up with those of a
    whole-contig run); contig: one job per contig; bed: the BED's regions (longer ones cut into
    tiles), packed into jobs of about region_size bases. An entry with its own regions_bed
    defaults to bed."""
    fasta, regions_bed = entry["path"], entry.get("regions_bed") or EC.get("regions_bed", "")
    mode = entry.get("scatter") or ("bed" if entry.get("regions_bed") else EC.get("scatter", "size"))
    if mode not in ("size", "contig", "bed"):
        fail(f"embed.scatter: '{mode}' is not one of size, contig, bed")
    window = int(EC.get("window", 0) or 0)
    stride = int(EC.get("stride", 0) or 0) or window
    size = int(entry.get("region_size") or EC.get("region_size", 1_000_000))
    if stride > 0 and size % stride:
        size += stride - size % stride
    out, i = {}, 0
    if mode == "bed":
        if not regions_bed:
            fail("embed.scatter is 'bed' but no regions_bed was given")
        job, bases = [], 0
        for contig, beg, end in read_bed(regions_bed):
            for t in tiles(contig, end - beg + 1, size):
                b, e = beg + t[1] - 1, beg + t[2] - 1
                job.append(region_str(contig, b, e))
                bases += e - b + 1
                if bases >= size:
                    out[chunk_id(i, "bed", None, None)] = job
                    job, bases, i = [], 0, i + 1
        if job:
            out[chunk_id(i, "bed", None, None)] = job
        return out
    for contig, length in read_fai(fasta):
        for c, beg, end in tiles(contig, length, size if mode == "size" else 0):
            out[chunk_id(i, c, beg, end)] = [region_str(c, beg, end)]
            i += 1
    return out


def as_entry(name, v):
    """An embed.fasta entry: a path, or {path:, regions_bed:, scatter:, region_size:}."""
    v = {"path": v} if isinstance(v, str) else dict(v)
    if not v.get("path"):
        fail(f"embed.fasta.{name}: no path")
    return v


SCORE_VCFS = {k: v for k, v in (SC.get("vcfs") or {}).items()}
if SCORE_VCFS and not REF:
    fail("score.vcfs needs a reference: set `reference` in the config")
SCORE_CHUNKS = {k: score_chunks(v) for k, v in SCORE_VCFS.items()}
EMBED_FASTA = {k: as_entry(k, v) for k, v in (EC.get("fasta") or {}).items()}
EMBED_BAMS = {k: v for k, v in (EC.get("bams") or {}).items()}
EMBED_CHUNKS = {k: embed_chunks(v) for k, v in EMBED_FASTA.items()}
if set(EMBED_FASTA) & set(EMBED_BAMS):
    fail(f"embed: names used for both fasta and bams: {sorted(set(EMBED_FASTA) & set(EMBED_BAMS))}")
INDEX_EXT = {"tbi": ".tbi", "csi": ".csi"}.get(SC.get("index", "tbi")) or fail("score.index: tbi or csi")


def fasta_files(fasta):
    """The FASTA and its index files (.fai; .gzi when bgzipped)."""
    files = [fasta, f"{fasta}.fai"]
    if fasta.endswith((".gz", ".bgz")):
        files.append(f"{fasta}.gzi")
    return files


def maybe_temp(files, section):
    """Chunks are temp() (removed once gathered) unless the section says keep_chunks: true."""
    return files if section.get("keep_chunks", False) else temp(files)


# `mamba-dna embed` options from the config, for every embed job.
EMBED_OPTS = " ".join(
    x
    for x in (
        f"-w {int(EC['window'])}" if EC.get("window") not in (None, "") else "",
        f"-s {int(EC['stride'])}" if EC.get("stride") else "",
        f"--pool {EC['pool']}" if EC.get("pool") else "",
        EC.get("extra", ""),
    )
    if x
)
# merge_embed.py runs with Snakemake's own interpreter, or the conda env's with --use-conda.
PYTHON = "python3" if getattr(workflow, "use_conda", False) else sys.executable
