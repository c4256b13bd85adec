/* vcfio.h: VCF/BCF input and output on htslib, as `mamba-dna score` uses them. A reader (VCF, VCF.gz,
 * BCF, "-" for stdin; optional -r/-R regions through a .csi/.tbi index) and a writer that copies the
 * input header, appends the caller's lines and ##contig lines from a FASTA index, picks the output type
 * from -O or the file name as bcftools does, can index on the fly (CSI or TBI), and writes to a
 * temporary name in the same directory that is renamed only when everything succeeded.
 * Return codes: >= 0 success / a record, -1 end of input, < -1 error (logged "<file>: <problem>"). */
#ifndef MD_VCFIO_H
#define MD_VCFIO_H

#include <htslib/faidx.h>
#include <htslib/kstring.h>
#include <htslib/vcf.h>

/* ---- reader ------------------------------------------------------------------------------- */

typedef struct {
    const char *regions;      /* -r: "chr", "chr:pos", "chr:beg-end" (1-based, inclusive), comma-separated; or NULL */
    const char *regions_file; /* -R: BED (.bed/.bed.gz: 0-based half-open) or "chr pos [end]" (1-based) file; or NULL */
    int n_threads;            /* extra BGZF decompression threads; 0 = none */
    const faidx_t *fai;       /* optional reference: contigs it has that the header lacks are added to the
                                 header before any record is read, so records on them get stable contig ids
                                 (an undeclared contig otherwise gets one assigned mid-stream by htslib) */
} md_vcf_ropts_t;

void md_vcf_ropts_init(md_vcf_ropts_t *o); /* all zero/NULL */

typedef struct md_vcf_reader_t md_vcf_reader_t;

/* Opens a VCF, bgzipped VCF or BCF ("-" reads stdin) and reads its header. With regions, the file must
 * be indexed (.csi, or .tbi for VCF.gz); records come out once each, in file order, overlapping the
 * merged regions. Returns NULL on error, logged: a missing/unreadable file, "<file>: not a VCF/BCF
 * file", a truncated file (no BGZF EOF marker, header cut short), regions without an index. Close with
 * md_vcf_close. */
md_vcf_reader_t *md_vcf_open(const char *path, const md_vcf_ropts_t *opts);

/* The header; owned by the reader, valid until md_vcf_close. */
bcf_hdr_t *md_vcf_header(const md_vcf_reader_t *r);

/* Reads the next record into rec (from bcf_init(); unpacked up to ALT, BCF_UN_STR).
 * 0: a record; -1: end of input (or of the regions); < -1: error (logged with the file name). */
int md_vcf_read(md_vcf_reader_t *r, bcf1_t *rec);

/* The name used in messages: the path, or "stdin" for "-". */
const char *md_vcf_name(const md_vcf_reader_t *r);

/* Closes and frees (NULL is fine). 0, or < -1 when closing reported an error. */
int md_vcf_close(md_vcf_reader_t *r);

/* ---- writer ------------------------------------------------------------------------------- */

enum { MD_VCF_IDX_NONE = 0, MD_VCF_IDX_CSI = 1, MD_VCF_IDX_TBI = 2 };

/* The output type bcftools would pick for this name: ".bcf" -> 'b'; ".vcf.gz", ".vcf.bgz" -> 'z';
 * anything else (".vcf", "-") -> 'v'. Case-insensitive. */
char md_vcf_otype_from_path(const char *path);

typedef struct md_vcf_writer_t md_vcf_writer_t;

/* Opens an output. otype: 'v' VCF, 'z' bgzipped VCF, 'b' BCF, 'u' uncompressed BCF, 0 = from the name.
 * The header is a copy of in_hdr plus: extra_lines (each a full "##..." line, e.g. INFO definitions and
 * the line from md_vcf_command_line; an INFO/FORMAT/FILTER line whose ID in_hdr already defines with the
 * same Number and Type updates its Description, with a different one is an error), and, when fai is
 * given, "##contig=<ID=..,length=..>" for the reference's contigs that the header lacks (a declared contig
 * without a length gets the reference's length). The header is written at once.
 * write_index: MD_VCF_IDX_CSI (z, b or u) or MD_VCF_IDX_TBI (z only), written as <path>.csi / <path>.tbi.
 * A file is written to a temporary name in its directory; md_vcf_writer_close renames it. "-" writes
 * stdout (no index, no rename). in_hdr is copied, and also kept (not owned) for a check in
 * md_vcf_write: it must stay valid until the writer is closed. Returns NULL on error (logged). */
md_vcf_writer_t *md_vcf_writer_open(const char *path, char otype, const bcf_hdr_t *in_hdr,
                                    const char *const *extra_lines, int n_extra,
                                    const faidx_t *fai, int write_index);

/* The output header, for bcf_update_info_*() on records to be written; owned by the writer. Records
 * read under in_hdr are written as they are: the output header has the same contig and tag ids. */
bcf_hdr_t *md_vcf_writer_header(const md_vcf_writer_t *w);

/* The temporary file being written (NULL for stdout); for tests and messages. */
const char *md_vcf_writer_tmp_path(const md_vcf_writer_t *w);

/* Writes one record. 0, or < -1 on error (logged), after which the writer should be aborted.
 * A record that uses a contig or tag htslib defined while parsing (undeclared in the input header,
 * hence absent from the written header) is an error. */
int md_vcf_write(md_vcf_writer_t *w, bcf1_t *rec);

/* Finishes: saves the index, closes (a failed flush, e.g. a full disk, is an error), renames the
 * temporary file and index to their final names, frees w. 0, or < -1 with the temporary files removed
 * and the final path untouched. */
int md_vcf_writer_close(md_vcf_writer_t *w);

/* Gives up: closes, removes the temporary files, frees w (NULL is fine). */
void md_vcf_writer_abort(md_vcf_writer_t *w);

/* ---- header helpers ----------------------------------------------------------------------- */

/* "##mamba-dnaCommand=<argv joined by spaces>; Date=<date>" as bcftools writes its Command lines
 * (SOURCE_DATE_EPOCH, when set, fixes the date). malloc'ed; free it. NULL on out of memory. */
char *md_vcf_command_line(int argc, char *const *argv);

/* "##mamba-dnaVersion=<version>+htslib-<version>". malloc'ed; free it. */
char *md_vcf_version_line(void);

/* Adds "##contig=<ID=..,length=..>" for the reference's contigs missing from hdr, and the length to
 * declared contigs that have none; warns when a declared length differs from the reference. `what`
 * names the file in messages. Returns the number of lines added, or < -1 on error. */
int md_vcf_add_ref_contigs(bcf_hdr_t *hdr, const faidx_t *fai, const char *what);

/* Whether the reference has contig `name`: 1 yes; 0 no, and msg (cleared first; free msg->s) holds
 * "contig 'chr20' not in reference (reference has '20')" (or, with no similar name, the reference's
 * first contig names); < -1 on error. */
int md_vcf_ref_has_contig(const faidx_t *fai, const char *name, kstring_t *msg);

/* Checks the contigs declared in hdr against the reference. Returns how many are missing (the first
 * few logged as warnings); when none of them is in the reference (typically 'chr20' against '20'),
 * logs "<vcf_name>: contig 'chr20' not in reference (reference has '20')" and returns < -1. */
int md_vcf_check_contigs(const bcf_hdr_t *hdr, const faidx_t *fai, const char *vcf_name);

#endif
