// MAMBA_DNA_EMBED: embeddings of FASTA/FASTQ records, one region of an indexed FASTA, or the
// reads of a SAM/BAM/CRAM, nf-core module layout. Output: ${prefix}.npy (float32 rows: one per
// window with --pool mean, one per base with --pool none), ${prefix}.npy.bed (one line per row
// block: chrom/name, start, end, name, score, strand, first row, rows) and ${prefix}.npy.json
// (provenance), written by mamba-dna under temporary names and renamed.
// Window, stride, pooling, device: task.ext.args (e.g. "-w 512 --pool mean -d cuda").

process MAMBA_DNA_EMBED {
    tag "$meta.id"
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"
    container "${ params.mamba_dna_container ?: '' }"

    input:
    tuple val(meta), path(seq), path(seq_index), val(region)
    path(model)

    output:
    tuple val(meta), path("*.npy")     , emit: npy
    tuple val(meta), path("*.npy.bed") , emit: bed
    tuple val(meta), path("*.npy.json"), emit: json
    path "versions.yml"                , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: "${meta.id}"
    def model_opt = model ? "-m ${model}" : ''
    def region_opt = region ? "-r '${region}'" : ''
    if ("$seq" == "${prefix}.npy") error "Input and output names are the same, set prefix in module configuration to disambiguate!"
    """
    mamba-dna embed \\
        ${model_opt} \\
        -t ${task.cpus} \\
        ${region_opt} \\
        ${args} \\
        -o ${prefix}.npy \\
        ${seq}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        mamba-dna: \$(mamba-dna --version | sed 's/^mamba-dna //')
    END_VERSIONS
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.npy
    touch ${prefix}.npy.bed
    echo '{}' > ${prefix}.npy.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        mamba-dna: \$(mamba-dna --version | sed 's/^mamba-dna //')
    END_VERSIONS
    """
}
