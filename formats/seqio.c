/* seqio.c: the sequence reader. The input's first bytes are checked for compressions htslib
 * cannot read (xz aborts libhts 1.16), then hts_detect_format picks the path:
 *  - FASTA/FASTQ: our own streaming parser over BGZF (plain, gzip or BGZF; threaded for BGZF),
 *    because htslib's FASTA-as-SAM reader upper-cases bases and hides invalid bytes;
 *  - SAM/BAM/CRAM: sam_read1 (or sam_itr_queryi per region), flag filters, 4-bit -> base codes;
 *  - FASTA + regions: faidx (md_fasta_t), one region per record, in the order given. */
#define _GNU_SOURCE   /* mremap */
#include "seqio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef __SSSE3__
#include <immintrin.h>
#endif

#include <htslib/bgzf.h>
#include <htslib/faidx.h>
#include <htslib/hfile.h>
#include <htslib/hts.h>
#include <htslib/kstring.h>
#include <htslib/sam.h>
#include <zlib.h>

#include "md.h"

#define MAX_RECORD_LEN ((int64_t)INT32_MAX)   /* as BAM's l_qseq; see seqio.h */

/* ---- records ----------------------------------------------------------------------------- */

void md_seq_init(md_seq_t *s)
{
    memset(s, 0, sizeof *s);
    s->tid = -1;
    s->beg = s->end = -1;
    s->strand = '+';
}

void md_seq_destroy(md_seq_t *s)
{
    if (!s) return;
    free(s->name);
    if (s->seq_mapped) munmap(s->seq, s->m_seq);
    else free(s->seq);
    md_seq_init(s);
}

#define HUGE_ALIGN ((size_t)2 << 20)
#define MAP_MIN (2 * HUGE_ALIGN)

/* Record buffers. Chromosome-sized ones (>= 4 MB) are anonymous mappings grown with mremap
 * (no copy) and marked for transparent huge pages: measured on a 63 Mb chromosome, first-touch
 * faults of 4 KB pages cost more than decompressing and parsing it. */
static int seq_reserve(md_seq_t *s, int64_t n)
{
    if ((size_t)n <= s->m_seq) return 0;
    size_t m = s->m_seq ? s->m_seq : 1024;
    while (m < (size_t)n) m += m >> 1;   /* x1.5: a chromosome should not need 2x its size */
    if (m < MAP_MIN) {
        uint8_t *p = md_realloc(s->seq, m);
        if (!p) return -2;
        s->seq = p;
        s->m_seq = m;
        return 0;
    }
    m = (m + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1);
    void *p;
    if (s->seq_mapped)
        p = mremap(s->seq, s->m_seq, m, MREMAP_MAYMOVE);
    else
        p = mmap(NULL, m, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        md_error("out of memory allocating %zu bytes for a record", m);
        return -2;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, m, MADV_HUGEPAGE);   /* advice only: failure is harmless */
#endif
    if (!s->seq_mapped) {
        if (s->seq) memcpy(p, s->seq, s->m_seq);
        free(s->seq);
    }
    s->seq = p;
    s->m_seq = m;
    s->seq_mapped = 1;
    return 0;
}

static int seq_set_name(md_seq_t *s, const char *name, size_t n)
{
    if (n + 1 > s->m_name) {
        size_t m = n + 1 < 64 ? 64 : n + 1;
        char *p = md_realloc(s->name, m);
        if (!p) return -2;
        s->name = p;
        s->m_name = m;
    }
    memcpy(s->name, name, n);
    s->name[n] = 0;
    return 0;
}

static void seq_reset_meta(md_seq_t *s, md_seqkind_t kind)
{
    s->kind = kind;
    s->contig = NULL;
    s->tid = -1;
    s->beg = s->end = -1;
    s->flag = 0;
    s->strand = '+';
    s->reversed = 0;
}

/* ---- options ------------------------------------------------------------------------------ */

void md_seqopts_init(md_seqopts_t *o)
{
    memset(o, 0, sizeof *o);
    o->flag_exclude = MD_SEQ_FLAG_EXCLUDE_DEFAULT;
    o->min_len = 1;
    o->restore_orientation = 1;
}

int md_seqopts_check(const md_seqopts_t *o)
{
    if (o->threads < 0) {
        md_error("number of threads must be 0 or more (got %d)", o->threads);
        return -2;
    }
    if (o->min_len < 0) {
        md_error("minimum length must be 0 or more (got %" PRId64 ")", o->min_len);
        return -2;
    }
    if (o->flag_exclude & o->flag_require) {
        md_error("flags 0x%x are both required and excluded: no read could pass",
                 o->flag_exclude & o->flag_require);
        return -2;
    }
    if (o->n_regions < 0 || (o->n_regions > 0 && !o->regions)) {
        md_error("invalid region list");
        return -2;
    }
    return 0;
}

/* ---- compression / format sniffing -------------------------------------------------------- */

/* Names a compression that htslib cannot read from its magic bytes, or NULL. */
static const char *unsupported_compression(const uint8_t *m, ssize_t n)
{
    if (n >= 6 && !memcmp(m, "\xfd" "7zXZ\0", 6)) return "xz";
    if (n >= 3 && !memcmp(m, "BZh", 3)) return "bzip2";
    if (n >= 4 && !memcmp(m, "\x28\xb5\x2f\xfd", 4)) return "zstd";
    if (n >= 4 && !memcmp(m, "PK\x03\x04", 4)) return "zip";
    if (n >= 4 && !memcmp(m, "\x04\x22\x4d\x18", 4)) return "lz4";
    if (n >= 2 && !memcmp(m, "\x1f\x9d", 2)) return "compress (.Z)";
    return NULL;
}

/* Opens path for reading and rejects empty files and unsupported compression. */
static hFILE *open_checked(const char *path)
{
    hFILE *hf = hopen(path, "r");
    if (!hf) {
        md_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t magic[8];
    ssize_t n = hpeek(hf, magic, sizeof magic);
    if (n < 0) {
        md_error("%s: cannot read: %s", path, strerror(errno));
        hclose_abruptly(hf);
        return NULL;
    }
    if (n == 0) {
        md_error("%s: empty file", path);
        hclose_abruptly(hf);
        return NULL;
    }
    const char *z = unsupported_compression(magic, n);
    if (z) {
        md_error("%s: %s-compressed input is not supported; recompress with bgzip", path, z);
        hclose_abruptly(hf);
        return NULL;
    }
    return hf;
}

/* 1 when the gzip member at the start of hf is BGZF (FEXTRA with a "BC" subfield). */
static int peek_is_bgzf(hFILE *hf)
{
    uint8_t h[18];
    ssize_t n = hpeek(hf, h, sizeof h);
    return n == 18 && h[0] == 0x1f && h[1] == 0x8b && (h[3] & 4) && h[12] == 'B' && h[13] == 'C';
}

/* The first byte of the (decompressed) content, skipping blank lines; -1 if unknown. */
static int sniff_first_byte(hFILE *hf)
{
    uint8_t raw[4096];
    ssize_t n = hpeek(hf, raw, sizeof raw);
    if (n <= 0) return -1;
    const uint8_t *p = raw;
    uint8_t out[256];
    size_t m = (size_t)n;
    if (n >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {   /* inflate the first bytes */
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (inflateInit2(&zs, 16 + 15) != Z_OK) return -1;
        zs.next_in = raw;
        zs.avail_in = (uInt)n;
        zs.next_out = out;
        zs.avail_out = sizeof out;
        int zr = inflate(&zs, Z_SYNC_FLUSH);
        m = sizeof out - zs.avail_out;
        inflateEnd(&zs);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) return -1;
        p = out;
    }
    for (size_t i = 0; i < m; i++)
        if (p[i] != '\n' && p[i] != '\r') return p[i];
    return -1;
}

static int peek_is_gzip(hFILE *hf)
{
    uint8_t h[2];
    return hpeek(hf, h, 2) == 2 && h[0] == 0x1f && h[1] == 0x8b;
}

/* ---- indexed FASTA ------------------------------------------------------------------------ */

struct md_fasta_s {
    char *path, *fai_path, *gzi_path;
    int is_bgzf;
    faidx_t *fai;
    md_contigs_t *contigs;
};

/* One parsed .fai line. */
typedef struct {
    char *name;
    int64_t len, off, lb, lw;
} fai_line_t;

static void fai_lines_free(fai_line_t *a, int n)
{
    for (int i = 0; i < n; i++) free(a[i].name);
    free(a);
}

/* Reads the .fai text (names, lengths, offsets) so that lengths are 64-bit and names listed twice
 * are caught. Returns the number of lines, < -1 on error. */
static int fai_read_lines(const char *fai_path, fai_line_t **out)
{
    *out = NULL;
    BGZF *fp = bgzf_open(fai_path, "r");
    if (!fp) {
        md_error("%s: cannot open index: %s", fai_path, strerror(errno));
        return -2;
    }
    kstring_t ks = {0, 0, NULL};
    fai_line_t *a = NULL;
    int n = 0, m = 0, r, ret = -2;
    while ((r = bgzf_getline(fp, '\n', &ks)) >= 0) {
        if (ks.l && ks.s[ks.l - 1] == '\r') ks.s[--ks.l] = 0;
        if (ks.l == 0) continue;
        char *tab = strchr(ks.s, '\t');
        fai_line_t f = {0};
        if (!tab || sscanf(tab + 1, "%" SCNd64 "\t%" SCNd64 "\t%" SCNd64 "\t%" SCNd64, &f.len, &f.off,
                           &f.lb, &f.lw) != 4 || f.len < 0 || f.lb <= 0 || f.lw < f.lb) {
            md_error("%s: line %d: malformed FASTA index line", fai_path, n + 1);
            goto fail;
        }
        if (n == m) {
            m = m ? 2 * m : 64;
            fai_line_t *na = md_realloc(a, (size_t)m * sizeof *na);
            if (!na) goto fail;
            a = na;
        }
        f.name = strndup(ks.s, (size_t)(tab - ks.s));
        if (!f.name) {
            md_error("out of memory");
            goto fail;
        }
        a[n++] = f;
    }
    if (r < -1) {
        md_error("%s: error reading index", fai_path);
        goto fail;
    }
    ret = n;
fail:
    free(ks.s);
    bgzf_close(fp);
    if (ret < 0) fai_lines_free(a, n);
    else *out = a;
    return ret;
}

/* samtools faidx keeps the first of several records with one name and drops the others (with only
 * a warning), so an index can look clean while a record is hidden. The bytes between the end of
 * one indexed record and the start of the next should be one header line; when the gap is longer
 * than the shortest possible header, read it and look for a hidden record's header line. */
static int fai_check_hidden_records(md_fasta_t *f, const fai_line_t *a, int n)
{
    BGZF *bz = NULL;
    hFILE *hf = NULL;
    int ret = -2, opened = 0;
    char buf[4096];
    for (int i = 0; i <= n; i++) {   /* i == n: what follows the last indexed record */
        int64_t prev_end = 0;
        if (i > 0) {
            const fai_line_t *p = &a[i - 1];
            prev_end = p->off + (p->len / p->lb) * p->lw;
            if (p->len % p->lb) prev_end += p->len % p->lb + (p->lw - p->lb);
        }
        int64_t gap = i < n ? a[i].off - prev_end : (int64_t)sizeof buf - 1;
        int64_t min_hdr = i < n ? (int64_t)strlen(a[i].name) + 2 : -2;   /* ">name\n" */
        if (gap <= min_hdr + 1) continue;                                /* +1: CRLF */
        if (!opened) {
            opened = 1;
            if (f->is_bgzf) {
                bz = bgzf_open(f->path, "r");
                if (!bz || bgzf_index_load(bz, f->gzi_path, NULL) < 0) {
                    md_error("%s: cannot open with its .gzi index %s", f->path, f->gzi_path);
                    goto done;
                }
            } else if (!(hf = hopen(f->path, "r"))) {
                md_error("%s: cannot open: %s", f->path, strerror(errno));
                goto done;
            }
        }
        int64_t want = gap < (int64_t)sizeof buf - 1 ? gap : (int64_t)sizeof buf - 1;
        /* the tail is read from 2 bytes early: seeking a BGZF to its very end is an error */
        int64_t back = i < n ? 0 : (prev_end < 2 ? prev_end : 2);
        ssize_t got;
        if (bz) {
            if (bgzf_useek(bz, prev_end - back, SEEK_SET) < 0) goto read_err;
            got = bgzf_read(bz, buf, (size_t)want);
        } else {
            if (hseek(hf, prev_end - back, SEEK_SET) < 0) goto read_err;
            got = hread(hf, buf, (size_t)want);
        }
        if (got < 0 || (i < n && got != want)) goto read_err;
        buf[got] = 0;
        if (i == n) {   /* only blank lines may follow the last record */
            if (got <= back) break;
            size_t k = (size_t)back + strspn(buf + back, "\r\n");
            if (buf[k] == '>') {
                size_t l = strcspn(buf + k + 1, " \t\r\n");
                md_error("%s: duplicate sequence name '%.*s' (the index %s lists it once; rename "
                         "the records so names are unique)", f->path, (int)l, buf + k + 1,
                         f->fai_path);
                goto done;
            }
            break;
        }
        /* the gap holds one line ending at a[i].off; an earlier line starting with '>' is a
         * record the index does not list */
        char *nl = memchr(buf, '\n', (size_t)got);
        if (nl && nl - buf < gap - 1 && buf[0] == '>') {
            size_t l = strcspn(buf + 1, " \t\r\n");
            md_error("%s: duplicate sequence name '%.*s' (the index %s lists it once; rename the "
                     "records so names are unique)", f->path, (int)l, buf + 1, f->fai_path);
            goto done;
        }
    }
    ret = 0;
    goto done;
read_err:
    md_error("%s: cannot read the bytes the index %s points to (index out of date?)", f->path,
             f->fai_path);
done:
    if (bz) bgzf_close(bz);
    if (hf) hclose_abruptly(hf);
    return ret;
}

static md_fasta_t *fasta_open(const char *path, const char *fai_path, int check_dups)
{
    md_fasta_t *f = md_calloc(1, sizeof *f);
    if (!f) return NULL;
    fai_line_t *lines = NULL;
    int nl = 0;
    kstring_t ks = {0, 0, NULL};
    if (!strcmp(path, "-")) {
        md_error("regions need a FASTA file with an index, not standard input");
        goto fail;
    }
    hFILE *hf = open_checked(path);
    if (!hf) goto fail;
    int gz = peek_is_gzip(hf);
    f->is_bgzf = peek_is_bgzf(hf);
    if (hclose(hf) < 0) {
        md_error("%s: error closing", path);
        goto fail;
    }
    if (gz && !f->is_bgzf) {
        md_error("%s: plain gzip cannot be read by region; recompress with bgzip and index with "
                 "'samtools faidx %s'", path, path);
        goto fail;
    }
    f->path = strdup(path);
    if (fai_path) f->fai_path = strdup(fai_path);
    else if (ksprintf(&ks, "%s.fai", path) >= 0) f->fai_path = strdup(ks.s);
    ks.l = 0;
    if (ksprintf(&ks, "%s.gzi", path) >= 0) f->gzi_path = strdup(ks.s);
    if (!f->path || !f->fai_path || !f->gzi_path) {
        md_error("out of memory");
        goto fail;
    }
    /* we never create index files (they would land next to the user's input): ask for them */
    if (access(f->fai_path, R_OK) != 0) {
        md_error("%s: no FASTA index %s; create it with 'samtools faidx %s'", path, f->fai_path,
                 path);
        goto fail;
    }
    if (f->is_bgzf && access(f->gzi_path, R_OK) != 0) {
        md_error("%s: no BGZF index %s; create it with 'samtools faidx %s'", path, f->gzi_path,
                 path);
        goto fail;
    }
    f->fai = fai_load3(path, f->fai_path, f->is_bgzf ? f->gzi_path : NULL, 0);
    if (!f->fai) {
        md_error("%s: cannot load the FASTA index %s", path, f->fai_path);
        goto fail;
    }
    if ((nl = fai_read_lines(f->fai_path, &lines)) < 0) goto fail;
    if (!(f->contigs = md_contigs_init())) goto fail;
    for (int i = 0; i < nl; i++)
        if (md_contigs_add(f->contigs, lines[i].name, lines[i].len, f->fai_path) < 0) goto fail;
    if (check_dups && fai_check_hidden_records(f, lines, nl) < 0) goto fail;
    fai_lines_free(lines, nl);
    free(ks.s);
    return f;
fail:
    fai_lines_free(lines, nl > 0 ? nl : 0);
    free(ks.s);
    md_fasta_close(f);
    return NULL;
}

md_fasta_t *md_fasta_open(const char *path, const char *fai_path)
{
    return fasta_open(path, fai_path, 1);
}

md_fasta_t *md_fasta_dup(const md_fasta_t *f)
{
    return fasta_open(f->path, f->fai_path, 0);
}

void md_fasta_close(md_fasta_t *f)
{
    if (!f) return;
    if (f->fai) fai_destroy(f->fai);
    md_contigs_destroy(f->contigs);
    free(f->path);
    free(f->fai_path);
    free(f->gzi_path);
    free(f);
}

const md_contigs_t *md_fasta_contigs(const md_fasta_t *f) { return f->contigs; }

int md_fasta_fetch(md_fasta_t *f, const md_region_t *r, md_seq_t *rec)
{
    char label[1024];
    md_region_format(r, label, sizeof label);
    int tid = md_contigs_find(f->contigs, r->contig);
    if (tid < 0) {
        md_error("%s: region '%s': unknown contig '%s'", f->path, label, r->contig);
        return -2;
    }
    int64_t clen = md_contigs_len(f->contigs, tid);
    if (r->beg < 0 || r->end <= r->beg || r->end > clen) {
        md_error("%s: region '%s' is outside contig '%s' (length %" PRId64 ")", f->path, label,
                 r->contig, clen);
        return -2;
    }
    int64_t want = r->end - r->beg;
    if (want > MAX_RECORD_LEN) {
        md_error("%s: region '%s' is longer than %" PRId64 " bases", f->path, label,
                 MAX_RECORD_LEN);
        return -2;
    }
    hts_pos_t got = 0;
    char *s = faidx_fetch_seq64(f->fai, r->contig, r->beg, r->end - 1, &got);
    if (!s || got != want) {
        md_error("%s: region '%s': read %" PRId64 " of %" PRId64 " bases (file truncated or index "
                 "out of date?)", f->path, label, (int64_t)(s ? got : 0), want);
        free(s);
        return -2;
    }
    if (seq_reserve(rec, want) < 0 || seq_set_name(rec, label, strlen(label)) < 0) {
        free(s);
        return -2;
    }
    for (int64_t i = 0; i < want; i++) {
        uint8_t v = md_base_code[(uint8_t)s[i]];
        if (v == MD_BASE_INVALID) {
            md_error("%s: region '%s' position %" PRId64 " (%s:%" PRId64 "): invalid base '%c'",
                     f->path, label, i + 1, r->contig, r->beg + i + 1, s[i]);
            free(s);
            return -2;
        }
        rec->seq[i] = v;
    }
    free(s);
    seq_reset_meta(rec, MD_SEQ_REGION);
    rec->len = want;
    rec->contig = md_contigs_name(f->contigs, tid);
    rec->tid = tid;
    rec->beg = r->beg;
    rec->end = r->end;
    return 0;
}

/* ---- the reader ---------------------------------------------------------------------------- */

enum { MODE_TEXT, MODE_HTS, MODE_FASTA_REGIONS };

struct md_seqreader_s {
    char *path;
    int mode;
    md_seqopts_t o;
    md_seqstats_t st;
    char format[64];
    /* text (FASTA/FASTQ) */
    BGZF *bz;
    uint8_t *buf;
    size_t pos, end;
    int eof, fastq, failed;
    const char *zname;       /* "gzip", "BGZF" or "" */
    kstring_t line;
    /* SAM/BAM/CRAM */
    htsFile *hts;
    sam_hdr_t *hdr;
    bam1_t *b;
    hts_idx_t *idx;
    hts_itr_t *itr;
    /* regions (FASTA or BAM/CRAM) */
    md_contigs_t *contigs;   /* BAM/CRAM header contigs (FASTA: owned by fa) */
    md_fasta_t *fa;
    md_regions_t regs;
    int ireg;
};

/* Moves to the next decompressed block: 1 data available, 0 end of input, < -1 error. The text
 * is parsed in place in BGZF's block buffer (as bgzf_read does, less its copy; up to 64 KB a
 * block for BGZF, plain gzip and uncompressed input alike). */
static int text_fill(md_seqreader_t *r)
{
    if (r->pos < r->end) return 1;
    if (r->eof) return 0;
    BGZF *bz = r->bz;
    bz->block_offset = bz->block_length = 0;   /* the previous block is consumed */
    int n = -1;
    if (bgzf_read_block(bz) == 0) n = bz->block_length;
    if (n < 0) {
        md_error("%s: read error after %" PRId64 " records: truncated or corrupt%s%s data", r->path,
                 r->st.n_read, *r->zname ? " " : "", r->zname);
        r->failed = 1;
        return -2;
    }
    if (n == 0) {
        r->eof = 1;
        return 0;
    }
    r->buf = (uint8_t *)bz->uncompressed_block;
    r->pos = 0;
    r->end = (size_t)n;
    return 1;
}

/* Reads the rest of a line (without '\n' and a trailing '\r') into r->line. 0 ok, -1 end of input
 * before any byte, < -1 error. */
static int text_getline(md_seqreader_t *r)
{
    r->line.l = 0;
    int any = 0;
    for (;;) {
        int f = text_fill(r);
        if (f < 0) return f;
        if (f == 0) break;
        any = 1;
        uint8_t *p = r->buf + r->pos;
        size_t avail = r->end - r->pos;
        uint8_t *nl = memchr(p, '\n', avail);
        size_t n = nl ? (size_t)(nl - p) : avail;
        if (kputsn((char *)p, n, &r->line) < 0) {
            md_error("out of memory");
            return -2;
        }
        r->pos += n + (nl ? 1 : 0);
        if (nl) break;
    }
    if (!any) return -1;
    if (r->line.l && r->line.s[r->line.l - 1] == '\r') r->line.s[--r->line.l] = 0;
    return 0;
}

static void invalid_base(md_seqreader_t *r, md_seq_t *rec, int64_t pos1, uint8_t c)
{
    if (c >= 0x20 && c < 0x7f)
        md_error("%s: record '%s' position %" PRId64 ": invalid base '%c'", r->path, rec->name,
                 pos1, c);
    else
        md_error("%s: record '%s' position %" PRId64 ": invalid byte 0x%02x", r->path, rec->name,
                 pos1, c);
}

/* ASCII -> base codes (md_base_code) for 16 bytes with SSSE3; 0x80 marks a byte that is not a
 * base. Letters are 0x40-0x5f (upper case)
 * or 0x60-0x7f (lower case, + soft mask); the low nibble indexes one 16-entry table for
 * 0x40-0x4f and one for 0x50-0x5f (pshufb); any other high nibble is invalid. */
#ifdef __SSSE3__
static inline __m128i translate16(__m128i x)
{
    const __m128i t4 = _mm_setr_epi8((char)0x80, 0, 4, 1, 4, (char)0x80, (char)0x80, 2, 4,
                                     (char)0x80, (char)0x80, 4, (char)0x80, 4, 4, (char)0x80);
    const __m128i t5 = _mm_setr_epi8((char)0x80, (char)0x80, 4, 4, 3, (char)0x80, 4, 4,
                                     (char)0x80, 4, (char)0x80, (char)0x80, (char)0x80,
                                     (char)0x80, (char)0x80, (char)0x80);
    const __m128i nib = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(x, nib);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), nib);
    __m128i hi_nocase = _mm_and_si128(hi, _mm_set1_epi8(0x0d));   /* 6 -> 4, 7 -> 5 */
    __m128i is4 = _mm_cmpeq_epi8(hi_nocase, _mm_set1_epi8(4));
    __m128i is5 = _mm_cmpeq_epi8(hi_nocase, _mm_set1_epi8(5));
    __m128i v = _mm_or_si128(_mm_and_si128(is4, _mm_shuffle_epi8(t4, lo)),
                             _mm_and_si128(is5, _mm_shuffle_epi8(t5, lo)));
    __m128i letter = _mm_or_si128(is4, is5);
    v = _mm_or_si128(v, _mm_andnot_si128(letter, _mm_set1_epi8((char)0x80)));
    /* soft mask: high nibble 6 or 7 (bit 1 of the nibble) -> 0x08 */
    __m128i soft = _mm_and_si128(_mm_slli_epi16(hi, 2), _mm_set1_epi8(0x08));
    return _mm_or_si128(v, soft);
}
#endif

#ifdef __AVX2__
/* translate16 on 32 bytes (pshufb works within each 128-bit lane, so the tables are repeated) */
static inline __m256i translate32(__m256i x)
{
    const __m256i t4 = _mm256_setr_epi8(
        (char)0x80, 0, 4, 1, 4, (char)0x80, (char)0x80, 2, 4, (char)0x80, (char)0x80, 4, (char)0x80,
        4, 4, (char)0x80, (char)0x80, 0, 4, 1, 4, (char)0x80, (char)0x80, 2, 4, (char)0x80,
        (char)0x80, 4, (char)0x80, 4, 4, (char)0x80);
    const __m256i t5 = _mm256_setr_epi8(
        (char)0x80, (char)0x80, 4, 4, 3, (char)0x80, 4, 4, (char)0x80, 4, (char)0x80, (char)0x80,
        (char)0x80, (char)0x80, (char)0x80, (char)0x80, (char)0x80, (char)0x80, 4, 4, 3, (char)0x80,
        4, 4, (char)0x80, 4, (char)0x80, (char)0x80, (char)0x80, (char)0x80, (char)0x80, (char)0x80);
    const __m256i nib = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(x, nib);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), nib);
    __m256i hi_nocase = _mm256_and_si256(hi, _mm256_set1_epi8(0x0d));
    __m256i is4 = _mm256_cmpeq_epi8(hi_nocase, _mm256_set1_epi8(4));
    __m256i is5 = _mm256_cmpeq_epi8(hi_nocase, _mm256_set1_epi8(5));
    __m256i v = _mm256_or_si256(_mm256_and_si256(is4, _mm256_shuffle_epi8(t4, lo)),
                                _mm256_and_si256(is5, _mm256_shuffle_epi8(t5, lo)));
    __m256i letter = _mm256_or_si256(is4, is5);
    v = _mm256_or_si256(v, _mm256_andnot_si256(letter, _mm256_set1_epi8((char)0x80)));
    __m256i soft = _mm256_and_si256(_mm256_slli_epi16(hi, 2), _mm256_set1_epi8(0x08));
    return _mm256_or_si256(v, soft);
}
#endif

/* Sequence lines up to a line starting with `stop` ('>' FASTA, '+' FASTQ) or the end of input.
 * Returns 1 stopped at `stop` (not consumed), 0 at end of input, < -1 error. The inner loop
 * translates 32 (AVX2) or 16 (SSSE3) bytes at a time straight across line ends: a chunk with a
 * non-base byte (the newline, usually) is cut there and the byte is handled by the scalar loop,
 * so the output needs 32 bytes of slack and there is no per-line memchr. */
static int text_read_seq(md_seqreader_t *r, md_seq_t *rec, int stop)
{
    int64_t len = 0;
    int at_line_start = 1;
    for (;;) {
        int f = text_fill(r);
        if (f < 0) return f;
        if (f == 0) break;
        uint8_t *p = r->buf + r->pos, *e = r->buf + r->end;
        if (seq_reserve(rec, len + (e - p) + 32) < 0) return -2;
        uint8_t *o = rec->seq + len;
        while (p < e) {
            if (at_line_start) {
                if (*p == stop) {
                    r->pos = (size_t)(p - r->buf);
                    rec->len = o - rec->seq;
                    return 1;
                }
                at_line_start = 0;
            }
#if defined(__AVX2__)
            while (p + 32 <= e) {
                __m256i v = translate32(_mm256_loadu_si256((const __m256i *)p));
                _mm256_storeu_si256((__m256i *)o, v);
                unsigned m = (unsigned)_mm256_movemask_epi8(v);
                if (!m) {
                    p += 32;
                    o += 32;
                    continue;
                }
                int n = __builtin_ctz(m);
                p += n;
                o += n;
                goto special;
            }
#endif
#ifdef __SSSE3__
            while (p + 16 <= e) {
                __m128i v = translate16(_mm_loadu_si128((const __m128i *)p));
                _mm_storeu_si128((__m128i *)o, v);
                unsigned m = (unsigned)_mm_movemask_epi8(v);
                if (!m) {
                    p += 16;
                    o += 16;
                    continue;
                }
                int n = __builtin_ctz(m);   /* bases before the first non-base byte */
                p += n;
                o += n;
                break;
            }
#endif
            goto special;   /* keeps the label used in every build */
        special:
            while (p < e) {   /* the block's tail, or a non-base byte and the rest of its line */
                uint8_t c = *p, v = md_base_code[c];
                if (v != MD_BASE_INVALID) {
                    *o++ = v;
                    p++;
                    continue;
                }
                if (c == '\n') {
                    p++;
                    at_line_start = 1;
                    break;
                }
                if (c == '\r' || c == ' ' || c == '\t') {
                    p++;
                    continue;
                }
                invalid_base(r, rec, (int64_t)(o - rec->seq) + 1, c);
                return -2;
            }
        }
        len = o - rec->seq;
        r->pos = (size_t)(p - r->buf);
        if (len > MAX_RECORD_LEN) {
            md_error("%s: record '%s' is longer than %" PRId64 " bases", r->path, rec->name,
                     MAX_RECORD_LEN);
            return -2;
        }
    }
    rec->len = len;
    return 0;
}

/* FASTQ quality: exactly rec->len bytes over one or more lines, then the end of the line. */
static int text_skip_quality(md_seqreader_t *r, md_seq_t *rec)
{
    int64_t need = rec->len;
    while (need > 0) {
        int f = text_fill(r);
        if (f < 0) return f;
        if (f == 0) {
            md_error("%s: record '%s': quality is %" PRId64 " bases shorter than the sequence "
                     "(truncated file?)", r->path, rec->name, need);
            return -2;
        }
        uint8_t *p = r->buf + r->pos, *e = r->buf + r->end;
        while (p < e && need > 0) {
            if (*p != '\n' && *p != '\r') need--;
            p++;
        }
        r->pos = (size_t)(p - r->buf);
    }
    /* the rest of the line must be empty */
    int f = text_getline(r);
    if (f < -1) return f;
    if (f == 0 && r->line.l > 0) {
        md_error("%s: record '%s': quality is longer than the sequence (%" PRId64 " bases)",
                 r->path, rec->name, rec->len);
        return -2;
    }
    return 0;
}

static int text_read(md_seqreader_t *r, md_seq_t *rec)
{
    for (;;) {
        /* skip blank lines, then expect the record marker */
        int f;
        for (;;) {
            if ((f = text_fill(r)) < 0) return f;
            if (f == 0) return -1;
            uint8_t c = r->buf[r->pos];
            if (c == '\n' || c == '\r') {
                r->pos++;
                continue;
            }
            break;
        }
        uint8_t c = r->buf[r->pos];
        int marker = r->fastq ? '@' : '>';
        if (c != marker) {
            md_error("%s: record %" PRId64 ": expected '%c' at the start of a record, found '%c'%s",
                     r->path, r->st.n_read + 1, marker, c >= 0x20 && c < 0x7f ? c : '?',
                     r->fastq ? " (truncated or multi-line FASTQ?)" : "");
            return -2;
        }
        r->pos++;
        if ((f = text_getline(r)) < -1) return f;
        size_t nlen = strcspn(r->line.s ? r->line.s : "", " \t");
        if (nlen == 0) {
            md_error("%s: record %" PRId64 " has no name", r->path, r->st.n_read + 1);
            return -2;
        }
        if (seq_set_name(rec, r->line.s, nlen) < 0) return -2;
        seq_reset_meta(rec, r->fastq ? MD_SEQ_FASTQ : MD_SEQ_FASTA);
        r->st.n_read++;
        f = text_read_seq(r, rec, r->fastq ? '+' : '>');
        if (f < -1) return f;
        if (r->fastq) {
            if (f == 0) {
                md_error("%s: record '%s': no '+' line after the sequence (truncated file?)",
                         r->path, rec->name);
                return -2;
            }
            if ((f = text_getline(r)) < -1) return f;   /* the '+' line */
            if (text_skip_quality(r, rec) < 0) return -2;
        }
        if (rec->len == 0) {
            md_error("%s: record '%s' has no sequence", r->path, rec->name);
            return -2;
        }
        if (rec->len < r->o.min_len) {
            r->st.n_skip_short++;
            continue;
        }
        return 0;
    }
}

/* 4-bit BAM base -> base code (=ACMGRSVTWYHKDBN) */
static const uint8_t nt16_code[16] = {4, 0, 1, 4, 2, 4, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4};

static int hts_next_region(md_seqreader_t *r)
{
    hts_itr_destroy(r->itr);
    r->itr = NULL;
    if (r->ireg >= r->regs.n) return -1;
    const md_region_t *g = &r->regs.a[r->ireg++];
    r->itr = sam_itr_queryi(r->idx, g->tid, g->beg, g->end);
    if (!r->itr) {
        char buf[512];
        md_error("%s: cannot query region '%s' in the index", r->path,
                 md_region_format(g, buf, sizeof buf));
        return -2;
    }
    return 0;
}

static int hts_read(md_seqreader_t *r, md_seq_t *rec)
{
    bam1_t *b = r->b;
    for (;;) {
        int ret;
        if (r->idx) {
            if (!r->itr && (ret = hts_next_region(r)) < 0) return ret;
            ret = sam_itr_next(r->hts, r->itr, b);
            if (ret == -1) {
                hts_itr_destroy(r->itr);
                r->itr = NULL;
                continue;
            }
        } else {
            ret = sam_read1(r->hts, r->hdr, b);
        }
        if (ret == -1) return -1;
        if (ret < -1) {
            md_error("%s: error reading record %" PRId64 " (truncated or corrupt file?)", r->path,
                     r->st.n_read + 1);
            return -2;
        }
        r->st.n_read++;
        uint16_t flag = b->core.flag;
        if ((flag & r->o.flag_exclude) || (flag & r->o.flag_require) != r->o.flag_require) {
            r->st.n_skip_flag++;
            continue;
        }
        int64_t len = b->core.l_qseq;
        if (len <= 0) {
            r->st.n_skip_noseq++;
            continue;
        }
        if (len < r->o.min_len) {
            r->st.n_skip_short++;
            continue;
        }
        if (seq_reserve(rec, len) < 0) return -2;
        if (seq_set_name(rec, bam_get_qname(b), strlen(bam_get_qname(b))) < 0) return -2;
        seq_reset_meta(rec, MD_SEQ_READ);
        const uint8_t *s = bam_get_seq(b);
        uint8_t *o = rec->seq;
        int64_t i;
        for (i = 0; i + 1 < len; i += 2) {
            o[i] = nt16_code[s[i >> 1] >> 4];
            o[i + 1] = nt16_code[s[i >> 1] & 15];
        }
        if (i < len) o[i] = nt16_code[s[i >> 1] >> 4];
        rec->len = len;
        rec->flag = flag;
        rec->strand = (flag & BAM_FREVERSE) ? '-' : '+';
        if ((flag & BAM_FREVERSE) && r->o.restore_orientation) {
            md_revcomp_codes(rec->seq, rec->seq, len);
            rec->reversed = 1;
        }
        if (!(flag & BAM_FUNMAP) && b->core.tid >= 0) {
            rec->tid = b->core.tid;
            rec->contig = sam_hdr_tid2name(r->hdr, b->core.tid);
            rec->beg = b->core.pos;
            rec->end = bam_endpos(b);
        }
        return 0;
    }
}

static int fasta_regions_read(md_seqreader_t *r, md_seq_t *rec)
{
    for (;;) {
        if (r->ireg >= r->regs.n) return -1;
        const md_region_t *g = &r->regs.a[r->ireg++];
        r->st.n_read++;
        if (md_fasta_fetch(r->fa, g, rec) < 0) return -2;
        if (rec->len < r->o.min_len) {
            r->st.n_skip_short++;
            continue;
        }
        return 0;
    }
}

int md_seqreader_read(md_seqreader_t *r, md_seq_t *rec)
{
    int ret;
    switch (r->mode) {
    case MODE_TEXT: ret = text_read(r, rec); break;
    case MODE_HTS: ret = hts_read(r, rec); break;
    default: ret = fasta_regions_read(r, rec); break;
    }
    if (ret >= 0) {
        rec->index = r->st.n_emitted++;
        r->st.n_bases += rec->len;
    } else if (ret < -1) {
        r->failed = 1;   /* already reported; closing will complain again */
    }
    return ret;
}

/* Region strings then BED lines, checked against c. */
static int collect_regions(md_seqreader_t *r, const md_contigs_t *c)
{
    for (int i = 0; i < r->o.n_regions; i++)
        if (md_regions_add_string(&r->regs, c, r->o.regions[i], r->path) < 0) return -2;
    if (r->o.bed && md_bed_read(r->o.bed, c, &r->regs) < 0) return -2;
    if (r->regs.n == 0) {
        md_error("%s: no regions to read (the BED file %s is empty)", r->path,
                 r->o.bed ? r->o.bed : "");
        return -2;
    }
    for (int i = 0; i < r->regs.n; i++) r->st.n_clamped += r->regs.a[i].clamped;
    return 0;
}

/* A seekable BGZF/CRAM file without its end-of-file marker was cut short (samtools only warns;
 * half a genome silently embedded is worse than an error). */
static void eof_missing(const char *path)
{
    md_error("%s: the end-of-file marker is missing: the file is truncated (or was written by a "
             "tool that omits the marker; rewrite it with bgzip or samtools)", path);
}

static int open_hts(md_seqreader_t *r, hFILE *hf, int want_regions)
{
    r->hts = hts_hopen(hf, r->path, "r");
    if (!r->hts) {
        hclose_abruptly(hf);
        md_error("%s: cannot open as SAM/BAM/CRAM", r->path);
        return -2;
    }
    r->mode = MODE_HTS;
    const htsFormat *fmt = hts_get_format(r->hts);
    if ((fmt->compression == bgzf || fmt->format == cram) && hts_check_EOF(r->hts) == 0) {
        eof_missing(r->path);
        return -2;
    }
    if (fmt->format == cram) {
        if (r->o.reference && hts_set_fai_filename(r->hts, r->o.reference) < 0) {
            md_error("%s: cannot use CRAM reference %s", r->path, r->o.reference);
            return -2;
        }
        hts_set_opt(r->hts, CRAM_OPT_DECODE_MD, 0);
        /* SEQ needs the reference and CIGAR; FLAG/RNAME/POS for filters and provenance */
        hts_set_opt(r->hts, CRAM_OPT_REQUIRED_FIELDS,
                    SAM_QNAME | SAM_FLAG | SAM_RNAME | SAM_POS | SAM_CIGAR | SAM_SEQ);
    }
    if (r->o.threads > 0 && hts_set_threads(r->hts, r->o.threads) < 0) {
        md_error("%s: cannot start %d decompression threads", r->path, r->o.threads);
        return -2;
    }
    if (!(r->hdr = sam_hdr_read(r->hts))) {
        md_error("%s: cannot read the SAM/BAM/CRAM header (truncated or corrupt file?)", r->path);
        return -2;
    }
    if (!(r->b = bam_init1())) {
        md_error("out of memory");
        return -2;
    }
    if (!(r->contigs = md_contigs_init())) return -2;
    int n = sam_hdr_nref(r->hdr);
    for (int i = 0; i < n; i++)
        if (md_contigs_add(r->contigs, sam_hdr_tid2name(r->hdr, i), sam_hdr_tid2len(r->hdr, i),
                           r->path) < 0)
            return -2;
    if (want_regions) {
        if (!strcmp(r->path, "-")) {
            md_error("region queries need an indexed file, not standard input");
            return -2;
        }
        r->idx = sam_index_load3(r->hts, r->path, NULL, HTS_IDX_SILENT_FAIL);
        if (!r->idx) {
            md_error("%s: region queries need an index (.bai/.csi/.crai); create it with "
                     "'samtools index %s'", r->path, r->path);
            return -2;
        }
        if (collect_regions(r, r->contigs) < 0) return -2;
    }
    snprintf(r->format, sizeof r->format, "%s", fmt->format == sam ? "SAM" :
             fmt->format == bam ? "BAM" : "CRAM");
    return 0;
}

md_seqreader_t *md_seqreader_open(const char *path, const md_seqopts_t *o)
{
    md_seqopts_t def;
    if (!o) {
        md_seqopts_init(&def);
        o = &def;
    }
    if (md_seqopts_check(o) < 0) return NULL;
    md_seqreader_t *r = md_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->o = *o;
    md_regions_init(&r->regs);
    if (!(r->path = strdup(path))) {
        md_error("out of memory");
        goto fail;
    }
    int want_regions = o->n_regions > 0 || o->bed;
    hFILE *hf = open_checked(path);
    if (!hf) goto fail;
    htsFormat fmt;
    if (hts_detect_format2(hf, path, &fmt) < 0) {
        md_error("%s: cannot read: %s", path, strerror(errno));
        hclose_abruptly(hf);
        goto fail;
    }
    if (fmt.format == unknown_format || fmt.format == text_format) {
        /* hts_detect_format calls a FASTA only what it can parse as clean sequence; an invalid
         * byte or an empty record must get an error naming its record, so look at the first
         * decompressed byte ourselves */
        int c = sniff_first_byte(hf);
        if (c == '>') fmt.format = fasta_format;
        else if (c == '@') fmt.format = fastq_format;
    }
    switch (fmt.format) {
    case fasta_format:
    case fastq_format:
        if (want_regions) {
            hclose_abruptly(hf);
            if (fmt.format == fastq_format) {
                md_error("%s: regions need an indexed FASTA, BAM or CRAM file, not FASTQ", path);
                goto fail;
            }
            r->mode = MODE_FASTA_REGIONS;
            if (!(r->fa = md_fasta_open(path, o->fai))) goto fail;
            if (collect_regions(r, md_fasta_contigs(r->fa)) < 0) goto fail;
            snprintf(r->format, sizeof r->format, "FASTA (indexed)");
            break;
        }
        r->mode = MODE_TEXT;
        r->fastq = fmt.format == fastq_format;
        int bgzf_in = peek_is_bgzf(hf), gz_in = peek_is_gzip(hf);
        if (!(r->bz = bgzf_hopen(hf, "r"))) {
            md_error("%s: cannot open: %s", path, strerror(errno));
            hclose_abruptly(hf);
            goto fail;
        }
        if (bgzf_in && bgzf_check_EOF(r->bz) == 0) {
            eof_missing(path);
            goto fail;
        }
        if (bgzf_in && o->threads > 0 && bgzf_mt(r->bz, o->threads, 256) < 0) {
            md_error("%s: cannot start %d decompression threads", path, o->threads);
            goto fail;
        }
        r->zname = bgzf_in ? "BGZF" : gz_in ? "gzip" : "";
        snprintf(r->format, sizeof r->format, "%s%s%s%s", r->fastq ? "FASTQ" : "FASTA",
                 *r->zname ? " (" : "", r->zname, *r->zname ? ")" : "");
        break;
    case sam:
    case bam:
    case cram:
        if (open_hts(r, hf, want_regions) < 0) goto fail;
        break;
    case empty_format:
        if (peek_is_gzip(hf)) {
            /* nothing decompressed: an empty stream, or one that fails to inflate */
            BGZF *bz = bgzf_hopen(hf, "r");
            char c;
            ssize_t n = bz ? bgzf_read(bz, &c, 1) : -1;
            if (bz) bgzf_close(bz);
            else hclose_abruptly(hf);
            if (n < 0) md_error("%s: truncated or corrupt gzip data (nothing could be decompressed)", path);
            else md_error("%s: empty file (no data after decompression)", path);
            goto fail;
        }
        md_error("%s: empty file (no data after decompression)", path);
        hclose_abruptly(hf);
        goto fail;
    default: {
        char *d = hts_format_description(&fmt);
        md_error("%s: not a FASTA, FASTQ, SAM, BAM or CRAM file (it looks like %s)", path,
                 d ? d : "unknown data");
        free(d);
        hclose_abruptly(hf);
        goto fail;
    }
    }
    return r;
fail:
    md_seqreader_close(r);
    return NULL;
}

int md_seqreader_close(md_seqreader_t *r)
{
    if (!r) return 0;
    int ret = 0;
    if (r->bz && bgzf_close(r->bz) < 0 && !r->failed) {
        md_error("%s: error closing", r->path);
        ret = -2;
    }
    hts_itr_destroy(r->itr);
    if (r->idx) hts_idx_destroy(r->idx);
    if (r->b) bam_destroy1(r->b);
    if (r->hdr) sam_hdr_destroy(r->hdr);
    if (r->hts && hts_close(r->hts) < 0 && !r->failed) {
        md_error("%s: error closing", r->path);
        ret = -2;
    }
    md_fasta_close(r->fa);
    md_contigs_destroy(r->contigs);
    md_regions_destroy(&r->regs);
    free(r->line.s);
    free(r->path);
    free(r);
    return ret;
}

const md_seqstats_t *md_seqreader_stats(const md_seqreader_t *r) { return &r->st; }
const char *md_seqreader_format(const md_seqreader_t *r) { return r->format; }

const md_contigs_t *md_seqreader_contigs(const md_seqreader_t *r)
{
    if (r->fa) return md_fasta_contigs(r->fa);
    return r->contigs;
}
