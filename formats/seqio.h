/* seqio.h: one streaming reader for FASTA/FASTQ (plain, gzip, BGZF, "-" = stdin), SAM/BAM/CRAM
 * (htslib sam_read1, flag filters, index region queries) and regions of an indexed FASTA.
 * Every record comes out as an md_seq_t of base codes (tokenizer.h: 0=A 1=C 2=G 3=T 4=N,
 * | MD_BASE_SOFTMASK for lower case) with its provenance (name, contig, position, strand).
 * Records are emitted in input order (regions: in the order given), independent of threads. */
#ifndef MD_SEQIO_H
#define MD_SEQIO_H

#include <stddef.h>
#include <stdint.h>
#include "regions.h"
#include "tokenizer.h"

/* SAM flag bits, as in htslib sam.h (BAM_F*), so callers need not include htslib. */
#define MD_FLAG_PAIRED        0x1
#define MD_FLAG_UNMAP         0x4
#define MD_FLAG_REVERSE       0x10
#define MD_FLAG_SECONDARY     0x100
#define MD_FLAG_QCFAIL        0x200
#define MD_FLAG_DUP           0x400
#define MD_FLAG_SUPPLEMENTARY 0x800
#define MD_SEQ_FLAG_EXCLUDE_DEFAULT \
    (MD_FLAG_SECONDARY | MD_FLAG_SUPPLEMENTARY | MD_FLAG_QCFAIL | MD_FLAG_DUP)

typedef enum {
    MD_SEQ_FASTA = 0,    /* a FASTA record */
    MD_SEQ_FASTQ = 1,    /* a FASTQ record */
    MD_SEQ_READ = 2,     /* a SAM/BAM/CRAM record */
    MD_SEQ_REGION = 3    /* a region of an indexed FASTA */
} md_seqkind_t;

typedef struct {
    md_seqkind_t kind;
    char *name;          /* record name (up to the first white space); reads: QNAME; regions:
                            "chr:beg-end" (1-based inclusive, after clamping) */
    uint8_t *seq;        /* len base codes */
    int64_t len;
    int64_t index;       /* 0-based ordinal of this record among the records emitted */
    /* reads and regions (else contig NULL, tid -1, beg -1, end -1) */
    const char *contig;  /* owned by the reader, valid until md_seqreader_close */
    int tid;
    int64_t beg, end;    /* reads: 0-based leftmost aligned position and end (bam_endpos) when
                            mapped; regions: 0-based half-open interval of the contig */
    /* reads */
    uint16_t flag;       /* SAM FLAG (0 for FASTA/FASTQ/regions) */
    char strand;         /* '+' or '-' (BAM_FREVERSE); '+' for FASTA/FASTQ/regions */
    int reversed;        /* 1 when seq was reverse-complemented back to the sequenced read's
                            orientation (opts.restore_orientation and BAM_FREVERSE) */
    /* buffers (internal: free them with md_seq_destroy, never with free) */
    size_t m_name, m_seq;
    int seq_mapped;
} md_seq_t;

/* A zeroed record; md_seq_destroy frees its buffers (the record itself is the caller's). */
void md_seq_init(md_seq_t *s);
void md_seq_destroy(md_seq_t *s);

typedef struct {
    int threads;                 /* extra decompression threads (hts_set_threads); 0 = none */
    uint32_t flag_exclude;       /* reads with any of these bits are skipped (samtools view -F);
                                    default MD_SEQ_FLAG_EXCLUDE_DEFAULT */
    uint32_t flag_require;       /* reads must have all of these bits (-f); default 0 */
    int64_t min_len;             /* records shorter than this are skipped (counted); default 1 */
    int restore_orientation;     /* default 1: reverse-complement BAM_FREVERSE reads back to the
                                    orientation they were sequenced in (as samtools fasta) */
    const char *reference;       /* CRAM reference FASTA (CRAM_OPT_REFERENCE); NULL: the header's
                                    M5/UR tags or REF_PATH as htslib resolves them */
    const char *fai;             /* explicit .fai path for region reads of a FASTA (default
                                    <fasta>.fai; the .gzi is looked for as <fasta>.gzi) */
    const char *const *regions;  /* region strings ("chr:beg-end"), n_regions of them */
    int n_regions;
    const char *bed;             /* BED file of regions (appended after the region strings) */
} md_seqopts_t;

void md_seqopts_init(md_seqopts_t *o);
/* Checks values (threads >= 0, min_len >= 0, required vs excluded flags). 0 or < -1 (logged). */
int md_seqopts_check(const md_seqopts_t *o);

typedef struct {
    int64_t n_read;          /* records read from the input (before any filter) */
    int64_t n_emitted;       /* records returned by md_seqreader_read */
    int64_t n_skip_flag;     /* reads skipped by flag_exclude / flag_require */
    int64_t n_skip_short;    /* records shorter than min_len (after the other filters) */
    int64_t n_skip_noseq;    /* reads with no stored sequence (SEQ '*') */
    int64_t n_bases;         /* bases emitted */
    int64_t n_clamped;       /* regions clamped at a contig end */
} md_seqstats_t;

typedef struct md_seqreader_s md_seqreader_t;

/* Opens path ("-" = stdin) with options o (NULL = defaults; o and the strings it points
 * to are only read during this call). The format is detected from the content,
 * not the name. With regions (o->regions / o->bed): a FASTA input is read through its .fai index
 * (never created: without an index the error says to run `samtools faidx`), a BAM or CRAM input
 * through its .bai/.csi/.crai (sam_itr_queryi; a read overlapping two regions is emitted once per
 * region). Errors naming the file: xz/bzip2/zstd/zip/lz4 input, an empty file, a non-sequence
 * file, a seekable BGZF/BAM/CRAM file without its end-of-file marker (truncated).
 * FASTA/FASTQ rules: the name is the header up to the first blank; CR, spaces and tabs inside
 * sequence lines are ignored; a record with no sequence, a byte that is not a base (tokenizer.h)
 * and a record over 2^31-1 bases are errors; FASTQ may be multi-line, quality length must match.
 * NULL on error (logged). Close with md_seqreader_close. */
md_seqreader_t *md_seqreader_open(const char *path, const md_seqopts_t *o);
/* Reads the next record that passes the filters into rec (its buffers are reused).
 * >= 0 ok, -1 end of input, < -1 error (logged with the file, and the record where known:
 * "in.fa: record 'chr1' position 1234: invalid base 'J'"). */
int md_seqreader_read(md_seqreader_t *r, md_seq_t *rec);
/* 0, or < -1 when closing reported an error (logged). NULL is allowed. */
int md_seqreader_close(md_seqreader_t *r);
const md_seqstats_t *md_seqreader_stats(const md_seqreader_t *r);
/* "FASTA", "FASTQ", "SAM", "BAM", "CRAM", with " (gzip)" / " (BGZF)" for compressed text, or
 * "FASTA (indexed)" for region reads. Owned by the reader. */
const char *md_seqreader_format(const md_seqreader_t *r);
/* The contig dictionary (BAM/CRAM header or FASTA index); NULL when the input has none. */
const md_contigs_t *md_seqreader_contigs(const md_seqreader_t *r);

/* ---- indexed FASTA (faidx), one handle per thread ------------------------------------------ */
typedef struct md_fasta_s md_fasta_t;

/* Loads path's index (fai_path, or <path>.fai; and <path>.gzi for BGZF) without ever writing one.
 * Errors: no index (with the samtools faidx command to run), plain gzip (recompress with bgzip),
 * xz, duplicate record names (listed twice in the .fai, or hidden by samtools faidx, which indexes
 * the first of several records with one name and drops the others: the bytes between indexed
 * records are checked for such a header). NULL on error (logged). Free with md_fasta_close. */
md_fasta_t *md_fasta_open(const char *path, const char *fai_path);
/* Another handle on the same file and index, for another thread (htslib faidx handles are not
 * thread-safe). NULL on error. */
md_fasta_t *md_fasta_dup(const md_fasta_t *f);
void md_fasta_close(md_fasta_t *f);
const md_contigs_t *md_fasta_contigs(const md_fasta_t *f);
/* Fetches region r (resolved against md_fasta_contigs) into rec as MD_SEQ_REGION: base codes,
 * name "chr:beg-end", contig/beg/end. Invalid bytes are errors naming the region and position.
 * >= 0 ok, < -1 error. */
int md_fasta_fetch(md_fasta_t *f, const md_region_t *r, md_seq_t *rec);

#endif
