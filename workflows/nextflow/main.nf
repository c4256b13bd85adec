#!/usr/bin/env nextflow
/*
 * mamba-dna pipeline: `mamba-dna score` and `mamba-dna embed` scattered over regions of the
 * reference and gathered, the same plan as the Snakemake workflow (../snakemake):
 *   score: per VCF, one MAMBA_DNA_SCORE task per tile of every contig that has records (read
 *          from the index with `bcftools index -s`), each scoring the records whose POS lies in
 *          its tile; GATHER_VCF concatenates the tiles in order (bcftools concat), indexes the
 *          result and checks its record count against the input's index.
 *          -> ${outdir}/score/<name>.vcf.gz + .tbi
 *   embed: per FASTA, one MAMBA_DNA_EMBED task per tile (tiles are a multiple of the stride, so
 *          windows line up with a whole-contig run); per BAM/CRAM one task; GATHER_EMBED joins
 *          the rows (merge_embed.py). -> ${outdir}/embed/<name>.npy + .npy.bed + .npy.json
 * Run:   nextflow run workflows/nextflow -profile standard --fasta ref.fa.gz --vcfs 'vcf/*.vcf.gz'
 *        nextflow run workflows/nextflow -profile slurm,gpu ...   (see nextflow.config)
 * Not run in this repository (Nextflow cannot be installed on its machines): the modules' script
 * and stub blocks are run under bash against the real binary by tests/cli/workflows_nextflow.sh.
 */
nextflow.enable.dsl = 2

include { MAMBA_DNA_SCORE } from './modules/local/mamba_dna/score/main'
include { MAMBA_DNA_EMBED } from './modules/local/mamba_dna/embed/main'

// "chr:beg-end" tiles (1-based, inclusive) of at most size bases; braces around names with ':'.
def tiles(String contig, long length, long size) {
    def name = contig.contains(':') ? "{${contig}}" : contig
    if (size <= 0 || size >= length) {
        return ["${name}:1-${length}".toString()]
    }
    def out = []
    for (long b = 1; b <= length; b += size) {
        out << "${name}:${b}-${Math.min(b + size - 1, length)}".toString()
    }
    return out
}

// [contig: length] from a FASTA index, in file order.
def fai_lengths(fasta) {
    def fai = file("${fasta}.fai")
    if (!fai.exists()) {
        error "${fasta}: no index ${fai}; run `samtools faidx ${fasta}`"
    }
    def m = [:]
    fai.eachLine { line -> def f = line.split('\t'); m[f[0]] = f[1] as long }
    return m
}

def strip_ext(name) {
    return name.replaceAll(/\.(vcf\.gz|vcf\.bgz|vcf|bcf|fa\.gz|fasta\.gz|fa|fasta|fna\.gz|fna|bam|cram|sam)$/, '')
}

// Contigs that have records, in file order, from the VCF/BCF index.
process VCF_CONTIGS {
    tag "$meta.id"
    label 'process_single'

    input:
    tuple val(meta), path(vcf), path(tbi)

    output:
    tuple val(meta), path(vcf), path(tbi), stdout, emit: contigs

    script:
    """
    bcftools index -s ${vcf} | cut -f1
    """
}

// Concatenates the scored tiles in tile order (no sorting: tiles follow the input's contig
// order and positions), indexes the result and checks that it has the input's record count.
process GATHER_VCF {
    tag "$meta.id"
    label 'process_low'
    publishDir "${params.outdir}/score", mode: params.publish_dir_mode

    input:
    tuple val(meta), path(vcf, stageAs: 'input/*'), path(tbi, stageAs: 'input/*'), path(chunks, stageAs: 'chunks/*')

    output:
    tuple val(meta), path("${meta.id}.vcf.gz"), path("${meta.id}.vcf.gz.tbi"), emit: vcf
    path "versions.yml", emit: versions

    script:
    """
    printf '%s\\n' ${chunks.join(' ')} > chunks.txt
    bcftools concat --threads ${task.cpus} -f chunks.txt -O z -o tmp.vcf.gz
    bcftools index -t tmp.vcf.gz
    n_in=\$(bcftools index -n ${vcf})
    n_out=\$(bcftools index -n tmp.vcf.gz)
    if [ "\$n_in" != "\$n_out" ]; then
        echo "[E::GATHER_VCF] ${meta.id}: \$n_out records gathered, the input has \$n_in" >&2
        exit 1
    fi
    mv tmp.vcf.gz.tbi ${meta.id}.vcf.gz.tbi
    mv tmp.vcf.gz ${meta.id}.vcf.gz

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bcftools: \$(bcftools --version | sed -n '1s/^bcftools //p')
    END_VERSIONS
    """
}

// Joins the embedding tiles' rows, sidecars and provenance (bin/merge_embed.py).
process GATHER_EMBED {
    tag "$meta.id"
    label 'process_low'
    publishDir "${params.outdir}/embed", mode: params.publish_dir_mode

    input:
    tuple val(meta), path(npys, stageAs: 'chunks/*'), path(sidecars, stageAs: 'chunks/*')

    output:
    tuple val(meta), path("${meta.id}.npy"), path("${meta.id}.npy.bed"), path("${meta.id}.npy.json"), emit: npy

    script:
    """
    merge_embed.py -o ${meta.id}.npy ${npys.join(' ')}
    """
}

workflow {
    if (!params.vcfs && !params.embed_fasta && !params.bams) {
        error "nothing to do: give --vcfs (with --fasta), --embed_fasta or --bams"
    }
    ch_model = params.model ? file(params.model, checkIfExists: true) : []
    long stride = (params.stride ?: params.window) as long
    long esize = params.embed_region_size as long
    if (stride > 0 && esize % stride) {
        esize += stride - esize % stride
    }

    if (params.vcfs) {
        if (!params.fasta) {
            error "--vcfs needs --fasta (the reference the VCFs were called against)"
        }
        def fasta = file(params.fasta, checkIfExists: true)
        def lengths = fai_lengths(fasta)
        def gzi = file("${fasta}.gzi")
        ch_ref = Channel.value([[id: strip_ext(fasta.name)], fasta, file("${fasta}.fai"), gzi.exists() ? gzi : []])

        ch_vcf = Channel.fromPath(params.vcfs.tokenize(','), checkIfExists: true)
            .map { vcf ->
                def idx = [file("${vcf}.tbi"), file("${vcf}.csi")].find { it.exists() }
                if (!idx) {
                    error "${vcf}: no .tbi/.csi index; run `bcftools index -t ${vcf}`"
                }
                [[id: strip_ext(vcf.name)], vcf, idx]
            }
        VCF_CONTIGS(ch_vcf)

        // A contig the reference lacks keeps one task, which stops with mamba-dna's message.
        ch_chunks = VCF_CONTIGS.out.contigs.flatMap { meta, vcf, idx, text ->
            def regions = text.readLines().findAll { it }.collectMany { c ->
                lengths.containsKey(c) ? tiles(c, lengths[c], params.region_size as long) : [c]
            }
            regions.withIndex().collect { r, i ->
                [meta + [id: "${meta.id}.${String.format('%05d', i)}", name: meta.id, chunk: i, n_chunks: regions.size()], vcf, idx, r]
            }
        }
        MAMBA_DNA_SCORE(ch_chunks, ch_ref, ch_model)

        ch_gather = MAMBA_DNA_SCORE.out.vcf
            .map { meta, vcf -> [groupKey(meta.name, meta.n_chunks), meta.chunk, vcf] }
            .groupTuple()
            .map { key, idx, vcfs -> [key.toString(), [idx, vcfs].transpose().sort { it[0] }.collect { it[1] }] }
            .join(ch_vcf.map { meta, vcf, idx -> [meta.id, vcf, idx] })
            .map { name, chunks, vcf, idx -> [[id: name], vcf, idx, chunks] }
        GATHER_VCF(ch_gather)
    }

    ch_embed = Channel.empty()
    if (params.embed_fasta) {
        ch_embed = ch_embed.mix(
            Channel.fromPath(params.embed_fasta.tokenize(','), checkIfExists: true).flatMap { fa ->
                def name = strip_ext(fa.name)
                def gzi = file("${fa}.gzi")
                def index = gzi.exists() ? [file("${fa}.fai"), gzi] : [file("${fa}.fai")]
                def regions = fai_lengths(fa).collectMany { c, len -> tiles(c, len, esize) }
                regions.withIndex().collect { r, i ->
                    [[id: "${name}.${String.format('%05d', i)}", name: name, chunk: i, n_chunks: regions.size()], fa, index, r]
                }
            })
    }
    if (params.bams) {
        ch_embed = ch_embed.mix(
            Channel.fromPath(params.bams.tokenize(','), checkIfExists: true).map { bam ->
                def name = strip_ext(bam.name)
                [[id: "${name}.00000", name: name, chunk: 0, n_chunks: 1], bam, [], '']
            })
    }
    if (params.embed_fasta || params.bams) {
        MAMBA_DNA_EMBED(ch_embed, ch_model)
        ch_rows = MAMBA_DNA_EMBED.out.npy
            .join(MAMBA_DNA_EMBED.out.bed)
            .join(MAMBA_DNA_EMBED.out.json)
            .map { meta, npy, bed, json -> [groupKey(meta.name, meta.n_chunks), meta.chunk, npy, [bed, json]] }
            .groupTuple()
            .map { key, idx, npys, sides ->
                def order = (0..<idx.size()).sort { idx[it] }
                [[id: key.toString()], order.collect { npys[it] }, order.collectMany { sides[it] }]
            }
        GATHER_EMBED(ch_rows)
    }
}
