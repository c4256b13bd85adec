// MAMBA_DNA_SCORE: zero-shot variant effect scores (INFO/MAMBA_LLR, INFO/MAMBA_EMBDIST) for the
// records of a VCF/BCF, nf-core module layout. With a region ("chr:beg-end"), only the records
// whose POS lies in it are scored (bcftools view -r REGION --regions-overlap 0), so that the tiles
// of a contig gather with `bcftools concat` into exactly the input's records; '' = the whole file.
// Output: ${prefix}.vcf.gz + .tbi, written by mamba-dna under a temporary name and renamed.
// GPU: label 'process_gpu' (nextflow.config sets `accelerator 1` and the container GPU options
// there); pass `-d cuda` (or leave the default `-d auto`) through task.ext.args.

process MAMBA_DNA_SCORE {
    tag "$meta.id"
    label 'process_gpu'

    // mamba-dna is not in bioconda yet: environment.yml has its runtime tools; mamba-dna itself
    // comes from params.mamba_dna_container or a local build on PATH.
    conda "${moduleDir}/environment.yml"
    container "${ params.mamba_dna_container ?: '' }"

    input:
    tuple val(meta), path(vcf), path(tbi), val(region)
    tuple val(meta2), path(fasta), path(fai), path(gzi)
    path(model)

    output:
    tuple val(meta), path("*.vcf.gz")    , emit: vcf
    tuple val(meta), path("*.vcf.gz.tbi"), emit: tbi
    path "versions.yml"                  , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: "${meta.id}"
    def model_opt = model ? "-m ${model}" : ''
    if ("$vcf" == "${prefix}.vcf.gz") error "Input and output names are the same, set prefix in module configuration to disambiguate!"
    """
    if [ -n '${region}' ]; then
        echo "[${task.process}] records of ${vcf} with POS in ${region} (on stdin below)" >&2
        bcftools view --no-version -r '${region}' --regions-overlap 0 -O u ${vcf} \\
            | mamba-dna score \\
                ${model_opt} \\
                -t ${task.cpus} \\
                ${args} \\
                -f ${fasta} \\
                --write-index=tbi \\
                -o ${prefix}.vcf.gz \\
                -
    else
        mamba-dna score \\
            ${model_opt} \\
            -t ${task.cpus} \\
            ${args} \\
            -f ${fasta} \\
            --write-index=tbi \\
            -o ${prefix}.vcf.gz \\
            ${vcf}
    fi

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        mamba-dna: \$(mamba-dna --version | sed 's/^mamba-dna //')
        bcftools: \$(bcftools --version | sed -n '1s/^bcftools //p')
    END_VERSIONS
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo "" | gzip > ${prefix}.vcf.gz
    touch ${prefix}.vcf.gz.tbi

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        mamba-dna: \$(mamba-dna --version | sed 's/^mamba-dna //')
        bcftools: \$(bcftools --version | sed -n '1s/^bcftools //p')
    END_VERSIONS
    """
}
