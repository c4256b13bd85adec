/* vcfio.c: VCF/BCF reader and writer on htslib (see vcfio.h). Regions are read through the index
 * one merged interval at a time (hts_itr), skipping records already returned for the previous
 * interval; the writer's header is a bcf_hdr_dup of the input header with lines only appended, so
 * records read under the input header are written without translating ids. Output goes to
 * "<path>.<pid>-<n>.tmp" (index: "<path>.csi.<pid>-<n>.tmp") and is renamed on success. */
#include "vcfio.h"
#include "md.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <htslib/bgzf.h>
#include <htslib/hts.h>
#include <htslib/regidx.h>
#include <htslib/tbx.h>

/* ---- contig-name hints -------------------------------------------------------------------- */

static int find_name(const char *const *names, int n, const char *s, int nocase)
{
    for (int i = 0; i < n; i++)
        if (nocase ? !strcasecmp(names[i], s) : !strcmp(names[i], s)) return i;
    return -1;
}

/* A name in `names` that is probably what `name` meant ('chr20' <-> '20', 'chrM' <-> 'MT', case). */
static const char *similar_name(const char *name, const char *const *names, int n)
{
    char buf[256];
    int i;
    size_t l = strlen(name);
    if (l >= sizeof buf - 4) return NULL;
    if (l > 3 && !strncasecmp(name, "chr", 3)) {
        if ((i = find_name(names, n, name + 3, 0)) >= 0) return names[i];
        if (!strcasecmp(name + 3, "M") && (i = find_name(names, n, "MT", 0)) >= 0) return names[i];
    } else {
        snprintf(buf, sizeof buf, "chr%s", name);
        if ((i = find_name(names, n, buf, 0)) >= 0) return names[i];
        if (!strcasecmp(name, "MT") && (i = find_name(names, n, "chrM", 0)) >= 0) return names[i];
    }
    if ((i = find_name(names, n, name, 1)) >= 0) return names[i];
    return NULL;
}

/* "contig 'chr20' not in <where> (<where> has '20')" into msg (cleared first). */
static int contig_hint(kstring_t *msg, const char *name, const char *where,
                       const char *const *names, int n)
{
    int r = 0;
    msg->l = 0;
    r |= ksprintf(msg, "contig '%s' not in %s", name, where) < 0;
    const char *alt = similar_name(name, names, n);
    if (alt) {
        r |= ksprintf(msg, " (%s has '%s')", where, alt) < 0;
    } else if (n == 0) {
        r |= ksprintf(msg, " (%s has no contigs)", where) < 0;
    } else {
        r |= ksprintf(msg, " (%s has %d contig%s: ", where, n, n > 1 ? "s" : "") < 0;
        for (int i = 0; i < n && i < 3; i++)
            r |= ksprintf(msg, "%s'%s'", i ? ", " : "", names[i]) < 0;
        r |= kputs(n > 3 ? ", ...)" : ")", msg) < 0;
    }
    if (r) {
        md_error("out of memory");
        return -2;
    }
    return 0;
}

static const char **fai_names(const faidx_t *fai, int *n)
{
    *n = faidx_nseq(fai);
    const char **names = md_malloc((size_t)(*n > 0 ? *n : 1) * sizeof *names);
    if (!names) return NULL;
    for (int i = 0; i < *n; i++) names[i] = faidx_iseq(fai, i);
    return names;
}

int md_vcf_ref_has_contig(const faidx_t *fai, const char *name, kstring_t *msg)
{
    if (!fai || !name || !msg) {
        md_error("no reference index, contig name or message buffer given");
        return -2;
    }
    msg->l = 0;
    if (msg->s) msg->s[0] = 0;
    if (faidx_has_seq(fai, name)) return 1;
    int n;
    const char **names = fai_names(fai, &n);
    if (!names) return -2;
    int r = contig_hint(msg, name, "reference", names, n);
    free(names);
    return r < 0 ? r : 0;
}

int md_vcf_check_contigs(const bcf_hdr_t *hdr, const faidx_t *fai, const char *vcf_name)
{
    int n = 0, missing = 0, first = -1, ret = 0;
    if (!hdr || !fai) {
        md_error("no header or reference index given");
        return -2;
    }
    if (!vcf_name) vcf_name = "VCF";
    const char **names = bcf_hdr_seqnames(hdr, &n);
    if (n == 0) {
        free(names);
        return 0;
    }
    if (!names) {
        md_error("%s: out of memory", vcf_name);
        return -2;
    }
    for (int i = 0; i < n; i++)
        if (!faidx_has_seq(fai, names[i])) {
            if (first < 0) first = i;
            missing++;
        }
    if (missing) {
        kstring_t msg = {0, 0, NULL};
        int shown = 0;
        for (int i = first; i < n; i++) {
            if (faidx_has_seq(fai, names[i])) continue;
            if (md_vcf_ref_has_contig(fai, names[i], &msg) < 0) {
                ret = -2;
                break;
            }
            if (missing == n) { /* nothing matches: almost always a naming convention mismatch */
                md_error("%s: %s", vcf_name, msg.s);
                ret = -2;
                break;
            }
            md_warn("%s: %s", vcf_name, msg.s);
            if (++shown == 3) break;
        }
        if (ret == 0 && missing > shown)
            md_warn("%s: %d more contigs of the header are not in the reference", vcf_name,
                    missing - shown);
        free(msg.s);
    }
    free(names);
    return ret < 0 ? ret : missing;
}

/* VCF 4.3 contig ID characters; anything else would break the ##contig line. */
static int valid_contig_name(const char *s)
{
    if (!*s || *s == '*' || *s == '=') return 0;
    for (; *s; s++)
        if (*s <= ' ' || *s > '~' || strchr("\\,\"'`()[]{}<>", *s)) return 0;
    return 1;
}

int md_vcf_add_ref_contigs(bcf_hdr_t *hdr, const faidx_t *fai, const char *what)
{
    int added = 0, skipped = 0;
    if (!hdr || !fai) {
        md_error("no header or reference index given");
        return -2;
    }
    if (!what) what = "VCF";
    int n = faidx_nseq(fai);
    for (int i = 0; i < n; i++) {
        const char *c = faidx_iseq(fai, i);
        int len = faidx_seq_len(fai, c);
        if (!valid_contig_name(c)) {
            if (!skipped++)
                md_warn("%s: reference contig name '%s' cannot be written in a VCF header; skipped",
                        what, c);
            continue;
        }
        int rid = bcf_hdr_name2id(hdr, c);
        if (rid < 0) {
            int r = len > 0 ? bcf_hdr_printf(hdr, "##contig=<ID=%s,length=%d>", c, len)
                            : bcf_hdr_printf(hdr, "##contig=<ID=%s>", c);
            if (r < 0) {
                md_error("%s: cannot add a ##contig line for '%s'", what, c);
                return -2;
            }
            added++;
            continue;
        }
        if (len <= 0) continue;
        bcf_hrec_t *h = bcf_hdr_get_hrec(hdr, BCF_HL_CTG, "ID", c, NULL);
        if (!h) continue;
        int k = bcf_hrec_find_key(h, "length");
        if (k < 0) { /* declared without a length: take the reference's */
            char num[32];
            int l = snprintf(num, sizeof num, "%d", len);
            if (bcf_hrec_add_key(h, "length", 6) < 0 || bcf_hrec_set_val(h, h->nkeys - 1, num, l, 0) < 0) {
                md_error("%s: cannot add the length of contig '%s' to the header", what, c);
                return -2;
            }
            /* the dictionary keeps lengths too (index levels use them); htslib's const is only
             * its API's promise, the entry itself is a plain heap object */
            ((bcf_idinfo_t *)hdr->id[BCF_DT_CTG][rid].val)->info[0] = len;
            hdr->dirty = 1;
            added++;
        } else if (h->vals[k] && strtoll(h->vals[k], NULL, 10) != len) {
            md_warn("%s: contig '%s' is %s bp long in the header but %d bp in the reference "
                    "(a different assembly?)", what, c, h->vals[k], len);
        }
    }
    if (skipped > 1) md_warn("%s: %d reference contig names skipped in all", what, skipped);
    if (bcf_hdr_sync(hdr) < 0) {
        md_error("%s: cannot update the header", what);
        return -2;
    }
    return added;
}

/* ---- reader ------------------------------------------------------------------------------- */

typedef struct {
    int tid;              /* id in the index (tbx) or header (BCF) */
    hts_pos_t beg, end;   /* 0-based, end exclusive */
} region_t;

struct md_vcf_reader_t {
    htsFile *fp;
    bcf_hdr_t *hdr;
    char *path;
    const char *name;
    long long n_read;
    int failed;           /* a read error was reported: closing does not report it again */
    /* regions */
    int use_regions;
    hts_idx_t *idx;       /* BCF */
    tbx_t *tbx;           /* bgzipped VCF */
    hts_itr_t *itr;       /* over reg[i_reg] */
    region_t *reg;
    int n_reg, i_reg;
    kstring_t line;
};

void md_vcf_ropts_init(md_vcf_ropts_t *o) { memset(o, 0, sizeof *o); }

bcf_hdr_t *md_vcf_header(const md_vcf_reader_t *r) { return r ? r->hdr : NULL; }
const char *md_vcf_name(const md_vcf_reader_t *r) { return r ? r->name : "(null)"; }

static int region_cmp(const void *a, const void *b)
{
    const region_t *x = a, *y = b;
    if (x->tid != y->tid) return x->tid < y->tid ? -1 : 1;
    if (x->beg != y->beg) return x->beg < y->beg ? -1 : 1;
    return 0;
}

static int load_index(md_vcf_reader_t *r)
{
    const htsFormat *f = hts_get_format(r->fp);
    if (f->compression != bgzf) {
        md_error("%s: regions (-r/-R) need a bgzipped, indexed file; compress and index it first "
                 "(bcftools view -Oz -o %s.gz %s && bcftools index %s.gz)",
                 r->name, r->path, r->path, r->path);
        return -2;
    }
    if (f->format == bcf)
        r->idx = bcf_index_load3(r->path, NULL, HTS_IDX_SILENT_FAIL);
    else
        r->tbx = tbx_index_load3(r->path, NULL, HTS_IDX_SILENT_FAIL);
    if (!r->idx && !r->tbx) {
        md_error("%s: regions (-r/-R) need an index and none was found (.csi/.tbi); "
                 "create one with: bcftools index %s", r->name, r->path);
        return -2;
    }
    return 0;
}

/* Parses -r/-R, resolves names against the index, sorts and merges the intervals. */
static int build_regions(md_vcf_reader_t *r, const md_vcf_ropts_t *o)
{
    regidx_t *ri = NULL;
    regitr_t *it = NULL;
    kstring_t hint = {0, 0, NULL};
    const char **hnames = NULL;
    int nh = 0, ret = -2, m = 0;
    char *warned = NULL;

    if (o->regions) {
        if (!*o->regions) {
            md_error("%s: empty region list", r->name);
            goto done;
        }
        char *s = strdup(o->regions), *p;
        if (!s) goto oom;
        for (p = s; *p; p++)
            if (*p == ',') *p = '\n';
        ri = regidx_init_string(s, regidx_parse_reg, NULL, 0, NULL);
        free(s);
        if (!ri) {
            md_error("%s: cannot parse the regions '%s' (expected chr, chr:pos or chr:beg-end, "
                     "comma-separated)", r->name, o->regions);
            goto done;
        }
    } else {
        if (access(o->regions_file, R_OK) != 0) {
            md_error("%s: %s", o->regions_file, strerror(errno));
            goto done;
        }
        ri = regidx_init(o->regions_file, NULL, NULL, 0, NULL);
        if (!ri) {
            md_error("%s: cannot parse the regions file (expected BED, or chr, pos[, end] columns)",
                     o->regions_file);
            goto done;
        }
    }
    if (!(it = regitr_init(ri))) goto oom;
    while (regitr_loop(it)) {
        if (it->beg < 0 || it->end < it->beg) {
            md_error("%s: invalid region %s:%lld-%lld (the end is before the start)", r->name,
                     it->seq, (long long)it->beg + 1, (long long)it->end + 1);
            goto done;
        }
        int tid = r->tbx ? tbx_name2id(r->tbx, it->seq) : bcf_hdr_name2id(r->hdr, it->seq);
        if (tid < 0) {
            /* no records there (declared in the header) or an unknown name: warn once per name */
            if (bcf_hdr_name2id(r->hdr, it->seq) < 0 && (!warned || strcmp(warned, it->seq))) {
                if (!hnames) hnames = bcf_hdr_seqnames(r->hdr, &nh);
                if (contig_hint(&hint, it->seq, "the file", hnames, nh) < 0) goto done;
                md_warn("%s: region %s; skipped", r->name, hint.s);
                free(warned);
                if (!(warned = strdup(it->seq))) goto oom;
            }
            continue;
        }
        if (r->n_reg == m) {
            m = m ? 2 * m : 16;
            region_t *t = md_realloc(r->reg, (size_t)m * sizeof *t);
            if (!t) goto done;
            r->reg = t;
        }
        region_t *g = &r->reg[r->n_reg++];
        g->tid = tid;
        g->beg = it->beg;
        g->end = it->end + 1;
    }
    if (r->n_reg > 1) {
        qsort(r->reg, r->n_reg, sizeof *r->reg, region_cmp);
        int k = 0;
        for (int i = 1; i < r->n_reg; i++) {
            region_t *a = &r->reg[k], *b = &r->reg[i];
            if (b->tid == a->tid && b->beg <= a->end) {
                if (b->end > a->end) a->end = b->end;
            } else {
                r->reg[++k] = *b;
            }
        }
        r->n_reg = k + 1;
    }
    ret = 0;
    goto done;
oom:
    md_error("out of memory");
done:
    free(warned);
    free(hint.s);
    free(hnames);
    if (it) regitr_destroy(it);
    if (ri) regidx_destroy(ri);
    return ret;
}

md_vcf_reader_t *md_vcf_open(const char *path, const md_vcf_ropts_t *opts)
{
    md_vcf_ropts_t def;
    md_vcf_reader_t *r = NULL;
    if (!opts) {
        md_vcf_ropts_init(&def);
        opts = &def;
    }
    if (!path || !*path) {
        md_error("no input file given");
        return NULL;
    }
    if (!(r = md_calloc(1, sizeof *r))) return NULL;
    if (!(r->path = strdup(path))) {
        md_error("out of memory");
        goto fail;
    }
    int is_stdin = !strcmp(path, "-");
    r->name = is_stdin ? "stdin" : r->path;
    r->use_regions = opts->regions || opts->regions_file;
    if (opts->regions && opts->regions_file) {
        md_error("%s: give regions either as a list (-r) or as a file (-R), not both", r->name);
        goto fail;
    }
    if (r->use_regions && is_stdin) {
        md_error("%s: regions (-r/-R) need an indexed file, not a stream", r->name);
        goto fail;
    }

    errno = 0;
    if (!(r->fp = hts_open(path, "r"))) {
        md_error("%s: cannot open: %s", r->name, errno ? strerror(errno) : "unknown error");
        goto fail;
    }
    const htsFormat *f = hts_get_format(r->fp);
    if (f->format != vcf && f->format != bcf) {
        char *d = hts_format_description(f);
        md_error("%s: not a VCF/BCF file (%s)", r->name,
                 f->format == empty_format ? "it is empty" : d ? d : "unknown format");
        free(d);
        goto fail;
    }
    if (f->compression == bgzf) {
        int e = bgzf_check_EOF(r->fp->fp.bgzf); /* 2: cannot tell (a pipe) */
        if (e == 0) {
            md_error("%s: no BGZF end-of-file marker: the file is truncated", r->name);
            goto fail;
        }
        if (e < 0) {
            md_error("%s: cannot check the end of the file: %s", r->name, strerror(errno));
            goto fail;
        }
    }
    if (opts->n_threads > 0 && hts_set_threads(r->fp, opts->n_threads) < 0) {
        md_error("%s: cannot start %d decompression threads", r->name, opts->n_threads);
        goto fail;
    }
    if (!(r->hdr = bcf_hdr_read(r->fp))) {
        md_error("%s: cannot read the VCF header (truncated or malformed file)", r->name);
        goto fail;
    }
    /* htslib 1.16 accepts an empty sample name in the #CHROM line but writes such a header
     * back as two lines, which no reader takes (found by fuzz_vcf) */
    for (int i = 0; i < bcf_hdr_nsamples(r->hdr); i++)
        if (!r->hdr->samples[i][0] || strchr(r->hdr->samples[i], '\t')) {
            md_error("%s: malformed #CHROM header line: sample %d has an empty name", r->name, i + 1);
            goto fail;
        }
    if (opts->fai && md_vcf_add_ref_contigs(r->hdr, opts->fai, r->name) < -1) goto fail;
    if (r->use_regions && (load_index(r) < 0 || build_regions(r, opts) < 0)) goto fail;
    return r;

fail:
    if (r) r->failed = 1; /* the error is logged already */
    md_vcf_close(r);
    return NULL;
}

/* Checks a record that htslib returned: errors it flagged without failing, and the unpack. */
static int check_record(md_vcf_reader_t *r, bcf1_t *rec)
{
    int e = rec->errcode & ~(BCF_ERR_CTG_UNDEF | BCF_ERR_TAG_UNDEF);
    if (e) {
        const char *why = e & BCF_ERR_NCOLS ? "wrong number of columns"
                        : e & BCF_ERR_LIMITS ? "a value beyond htslib's limits"
                        : e & BCF_ERR_CHAR ? "invalid characters"
                        : e & BCF_ERR_CTG_INVALID ? "invalid contig name"
                        : e & BCF_ERR_TAG_INVALID ? "invalid tag" : "unknown problem";
        md_error("%s: malformed record %lld (at %s:%lld): %s", r->name, r->n_read + 1,
                 bcf_seqname_safe(r->hdr, rec), (long long)rec->pos + 1, why);
        return -2;
    }
    if (bcf_unpack(rec, BCF_UN_STR) < 0) {
        md_error("%s: cannot decode record %lld", r->name, r->n_read + 1);
        return -2;
    }
    /* htslib 1.16 accepts VCF lines cut short after POS or ID; such a record cannot be written
     * back (htslib refuses to read the BCF it makes of it), and there is nothing to score */
    if (rec->n_allele < 1 || !rec->d.allele[0][0]) {
        md_error("%s: malformed record %lld (at %s:%lld): no REF allele (fewer than 8 columns?)",
                 r->name, r->n_read + 1, bcf_seqname_safe(r->hdr, rec), (long long)rec->pos + 1);
        return -2;
    }
    r->n_read++;
    return 0;
}

/* Parses the VCF line in r->line. htslib 1.16 accepts lines cut short (fewer than the 8 fixed
 * columns) and builds records from them that it cannot read back once written as BCF. */
static int parse_line(md_vcf_reader_t *r, bcf1_t *rec)
{
    int ncol = 1;
    for (const char *p = r->line.s; *p; p++) ncol += *p == '\t';
    if (ncol < 8) {
        md_error("%s: malformed record %lld: %d columns, a VCF record has at least 8: '%.40s%s'",
                 r->name, r->n_read + 1, ncol, r->line.s, r->line.l > 40 ? "..." : "");
        return -2;
    }
    if (vcf_parse1(&r->line, r->hdr, rec) < 0) {
        md_error("%s: malformed record %lld: '%.40s%s'", r->name, r->n_read + 1, r->line.s,
                 r->line.l > 40 ? "..." : "");
        return -2;
    }
    return 0;
}

static int read_region(md_vcf_reader_t *r, bcf1_t *rec)
{
    for (;;) {
        if (r->i_reg >= r->n_reg) return -1;
        region_t *g = &r->reg[r->i_reg];
        if (!r->itr) {
            r->itr = r->tbx ? tbx_itr_queryi(r->tbx, g->tid, g->beg, g->end)
                            : bcf_itr_queryi(r->idx, g->tid, g->beg, g->end);
            if (!r->itr) {
                md_error("%s: cannot query the index for region %d", r->name, r->i_reg + 1);
                return -2;
            }
        }
        int ret;
        if (r->tbx) {
            ret = tbx_itr_next(r->fp, r->tbx, r->itr, &r->line);
            if (ret >= 0 && (ret = parse_line(r, rec)) < 0) return ret;
        } else {
            ret = bcf_itr_next(r->fp, r->itr, rec);
        }
        if (ret == -1) { /* end of this interval */
            hts_itr_destroy(r->itr);
            r->itr = NULL;
            r->i_reg++;
            continue;
        }
        if (ret < 0) {
            md_error("%s: read error after %lld records (truncated or corrupt file)", r->name,
                     r->n_read);
            return -2;
        }
        /* a record overlapping the previous interval (same contig) was returned there already */
        if (r->i_reg > 0 && r->reg[r->i_reg - 1].tid == g->tid && rec->pos < r->reg[r->i_reg - 1].end)
            continue;
        return 0;
    }
}

int md_vcf_read(md_vcf_reader_t *r, bcf1_t *rec)
{
    int ret;
    if (!r || !rec) {
        md_error("no reader or record given");
        return -2;
    }
    if (r->use_regions) {
        ret = read_region(r, rec);
    } else if (r->fp->format.format == vcf) {
        do ret = hts_getline(r->fp, '\n', &r->line); /* blank lines (a trailing one) are skipped */
        while (ret >= 0 && (r->line.l == 0 || (r->line.l == 1 && r->line.s[0] == '\r')));
        if (ret >= 0) ret = parse_line(r, rec);
        else if (ret < -1) {
            md_error("%s: read error after %lld records (truncated or corrupt file)", r->name,
                     r->n_read);
            ret = -2;
        }
    } else {
        ret = bcf_read(r->fp, r->hdr, rec);
        if (ret < -1) {
            md_error("%s: read error after %lld records (truncated or corrupt file)", r->name,
                     r->n_read);
            ret = -2;
        }
    }
    if (ret == 0) ret = check_record(r, rec);
    if (ret < -1) r->failed = 1;
    return ret;
}

int md_vcf_close(md_vcf_reader_t *r)
{
    int ret = 0;
    if (!r) return 0;
    if (r->itr) hts_itr_destroy(r->itr);
    if (r->tbx) tbx_destroy(r->tbx);
    if (r->idx) hts_idx_destroy(r->idx);
    if (r->hdr) bcf_hdr_destroy(r->hdr);
    if (r->fp && hts_close(r->fp) != 0) {
        if (!r->failed) md_error("%s: error while closing", r->name);
        ret = -2;
    }
    free(r->line.s);
    free(r->reg);
    free(r->path);
    free(r);
    return ret;
}

/* ---- writer ------------------------------------------------------------------------------- */

struct md_vcf_writer_t {
    htsFile *fp;
    bcf_hdr_t *hdr;
    const bcf_hdr_t *in_hdr;
    int in_n_id, in_n_ctg;  /* in_hdr's dictionary sizes when hdr was copied from it */
    char *path, *tmp;       /* tmp: NULL for stdout */
    char *idx_path, *idx_tmp;
    const char *name;
    long long n_written;
};

char md_vcf_otype_from_path(const char *path)
{
    if (!path) return 'v';
    size_t l = strlen(path);
    if (l >= 4 && !strcasecmp(path + l - 4, ".bcf")) return 'b';
    if (l >= 7 && !strcasecmp(path + l - 7, ".vcf.gz")) return 'z';
    if (l >= 8 && !strcasecmp(path + l - 8, ".vcf.bgz")) return 'z';
    return 'v';
}

/* Creates "<base>.<pid>-<n>.tmp" exclusively (mode 0666 less the umask); returns its malloc'ed name. */
static char *create_tmp(const char *base, const char *what)
{
    kstring_t s = {0, 0, NULL};
    for (int i = 0; i < 1000; i++) {
        s.l = 0;
        if (ksprintf(&s, "%s.%ld-%d.tmp", base, (long)getpid(), i) < 0) {
            md_error("out of memory");
            break;
        }
        int fd = open(s.s, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            close(fd);
            return s.s;
        }
        if (errno != EEXIST) {
            md_error("%s: cannot create a temporary file next to it (%s): %s", what, s.s,
                     strerror(errno));
            break;
        }
    }
    free(s.s);
    return NULL;
}

/* Adds one caller-supplied header line. An INFO/FORMAT/FILTER ID that the header has already keeps its
 * id (records depend on it): same Number and Type -> the Description is updated; otherwise an error. */
static int add_extra_line(bcf_hdr_t *hdr, const char *line, const char *name)
{
    int len = 0;
    if (!line || strncmp(line, "##", 2) || strchr(line, '\n')) {
        md_error("%s: extra header line must be one line starting with '##': '%s'", name,
                 line ? line : "(null)");
        return -2;
    }
    bcf_hrec_t *nh = bcf_hdr_parse_line(hdr, line, &len);
    if (!nh) {
        md_error("%s: malformed header line '%s'", name, line);
        return -2;
    }
    int ret = 0, type = !strcmp(nh->key, "INFO") ? BCF_HL_INFO : !strcmp(nh->key, "FORMAT") ? BCF_HL_FMT
                      : !strcmp(nh->key, "FILTER") ? BCF_HL_FLT : BCF_HL_GEN;
    if (type == BCF_HL_INFO || type == BCF_HL_FMT || type == BCF_HL_FLT) {
        int ki = bcf_hrec_find_key(nh, "ID");
        bcf_hrec_t *old = ki >= 0 ? bcf_hdr_get_hrec(hdr, type, "ID", nh->vals[ki], NULL) : NULL;
        if (old) {
            static const char *const keys[] = {"Number", "Type"};
            for (int i = 0; i < 2 && type != BCF_HL_FLT; i++) {
                int a = bcf_hrec_find_key(old, keys[i]), b = bcf_hrec_find_key(nh, keys[i]);
                const char *va = a >= 0 ? old->vals[a] : "", *vb = b >= 0 ? nh->vals[b] : "";
                if (strcmp(va, vb)) {
                    md_error("%s: %s/%s is already defined with %s=%s, not %s=%s; remove it from the "
                             "input first (bcftools annotate -x %s/%s)", name, nh->key, nh->vals[ki],
                             keys[i], va, keys[i], vb, nh->key, nh->vals[ki]);
                    ret = -2;
                    goto done;
                }
            }
            int d = bcf_hrec_find_key(nh, "Description");
            if (d >= 0) {
                int od = bcf_hrec_find_key(old, "Description");
                if (od < 0) {
                    if (bcf_hrec_add_key(old, "Description", 11) < 0) goto oom;
                    od = old->nkeys - 1;
                }
                if (bcf_hrec_set_val(old, od, nh->vals[d], strlen(nh->vals[d]), 0) < 0) goto oom;
                hdr->dirty = 1;
            }
            goto done;
        }
    }
    if (bcf_hdr_append(hdr, line) < 0) {
        md_error("%s: cannot add the header line '%s'", name, line);
        ret = -2;
    }
    goto done;
oom:
    md_error("out of memory");
    ret = -2;
done:
    bcf_hrec_destroy(nh);
    return ret;
}

md_vcf_writer_t *md_vcf_writer_open(const char *path, char otype, const bcf_hdr_t *in_hdr,
                                    const char *const *extra_lines, int n_extra,
                                    const faidx_t *fai, int write_index)
{
    md_vcf_writer_t *w = NULL;
    const char *mode;
    if (!path || !*path || !in_hdr) {
        md_error("no output file or input header given");
        return NULL;
    }
    int is_stdout = !strcmp(path, "-");
    const char *name = is_stdout ? "stdout" : path;
    if (!otype) otype = md_vcf_otype_from_path(path);
    switch (otype) {
    case 'v': mode = "w"; break;
    case 'z': mode = "wz"; break;
    case 'b': mode = "wb"; break;
    case 'u': mode = "wbu"; break;
    default:
        md_error("%s: unknown output type '%c' (expected v, z, b or u)", name, otype);
        return NULL;
    }
    if (write_index) {
        if (write_index != MD_VCF_IDX_CSI && write_index != MD_VCF_IDX_TBI) {
            md_error("%s: unknown index type %d", name, write_index);
            return NULL;
        }
        if (is_stdout) {
            md_error("cannot write an index for stdout; write to a file (-o)");
            return NULL;
        }
        if (otype != 'z' && otype != 'b') {
            md_error("%s: an index needs bgzipped output (-O z or -O b), not -O %c", name, otype);
            return NULL;
        }
        if (write_index == MD_VCF_IDX_TBI && otype != 'z') {
            md_error("%s: a TBI index is for bgzipped VCF only; use CSI for BCF", name);
            return NULL;
        }
    }
    if (n_extra > 0 && !extra_lines) {
        md_error("%s: %d extra header lines announced but none given", name, n_extra);
        return NULL;
    }

    if (!(w = md_calloc(1, sizeof *w))) return NULL;
    if (!(w->path = strdup(path))) goto oom;
    w->name = is_stdout ? "stdout" : w->path;
    w->in_hdr = in_hdr;

    if (!(w->hdr = bcf_hdr_dup(in_hdr))) {
        md_error("%s: cannot copy the input header", w->name);
        goto fail;
    }
    w->in_n_id = in_hdr->n[BCF_DT_ID];
    w->in_n_ctg = in_hdr->n[BCF_DT_CTG];
    for (int i = 0; i < n_extra; i++)
        if (add_extra_line(w->hdr, extra_lines[i], w->name) < 0) goto fail;
    if (fai && md_vcf_add_ref_contigs(w->hdr, fai, w->name) < -1) goto fail;
    if (bcf_hdr_sync(w->hdr) < 0) {
        md_error("%s: cannot build the output header", w->name);
        goto fail;
    }

    if (!is_stdout && !(w->tmp = create_tmp(path, path))) goto fail;
    if (write_index) {
        kstring_t s = {0, 0, NULL};
        if (ksprintf(&s, "%s.%s", path, write_index == MD_VCF_IDX_TBI ? "tbi" : "csi") < 0) goto oom;
        w->idx_path = s.s;
        if (!(w->idx_tmp = create_tmp(w->idx_path, path))) goto fail;
    }
    errno = 0;
    if (!(w->fp = hts_open(is_stdout ? "-" : w->tmp, mode))) {
        md_error("%s: cannot open for writing: %s", w->name, errno ? strerror(errno) : "unknown error");
        goto fail;
    }
    if (bcf_hdr_write(w->fp, w->hdr) < 0) {
        md_error("%s: cannot write the header: %s", w->name, errno ? strerror(errno) : "I/O error");
        goto fail;
    }
    if (write_index &&
        bcf_idx_init(w->fp, w->hdr, write_index == MD_VCF_IDX_TBI ? 0 : 14, w->idx_tmp) < 0) {
        md_error("%s: cannot start the index", w->name);
        goto fail;
    }
    return w;

oom:
    md_error("out of memory");
fail:
    md_vcf_writer_abort(w);
    return NULL;
}

bcf_hdr_t *md_vcf_writer_header(const md_vcf_writer_t *w) { return w ? w->hdr : NULL; }
const char *md_vcf_writer_tmp_path(const md_vcf_writer_t *w) { return w ? w->tmp : NULL; }

/* The name of tag id `id` in header h, or "?" when h has no such id (the id may come from a
 * header htslib extended while parsing; found by fuzz_vcf: an unchecked lookup read past h's
 * id table). */
static const char *id_name(const bcf_hdr_t *h, int id)
{
    return id >= 0 && id < h->n[BCF_DT_ID] && h->id[BCF_DT_ID][id].key ? h->id[BCF_DT_ID][id].key : "?";
}

/* After htslib defined a contig or tag while parsing (undeclared in the input), the input header's ids
 * past the copied ones mean something else in the output header. Refuses records that use them. */
static int check_new_ids(md_vcf_writer_t *w, bcf1_t *rec)
{
    const bcf_hdr_t *ih = w->in_hdr;
    const char *what = NULL, *id = NULL;
    if (rec->rid >= w->in_n_ctg || (rec->errcode & BCF_ERR_CTG_UNDEF)) {
        what = "contig";
        id = rec->rid >= 0 && rec->rid < ih->n[BCF_DT_CTG] ? bcf_hdr_id2name(ih, rec->rid) : "?";
    } else {
        if (bcf_unpack(rec, BCF_UN_ALL) < 0) {
            md_error("%s: cannot decode the record at %s:%lld", w->name,
                     bcf_seqname_safe(w->hdr, rec), (long long)rec->pos + 1);
            return -2;
        }
        for (int i = 0; i < rec->n_info && !what; i++)
            if (rec->d.info[i].key >= w->in_n_id) what = "INFO tag", id = id_name(ih, rec->d.info[i].key);
        /* htslib unpacks FORMAT only when there are samples (found by fuzz_vcf: a FORMAT
         * column in a file without samples read past d.fmt) */
        for (int i = 0; rec->n_sample && (rec->unpacked & BCF_UN_FMT) && i < rec->n_fmt && !what; i++)
            if (rec->d.fmt[i].id >= w->in_n_id) what = "FORMAT tag", id = id_name(ih, rec->d.fmt[i].id);
        for (int i = 0; i < rec->d.n_flt && !what; i++)
            if (rec->d.flt[i] >= w->in_n_id) what = "FILTER", id = id_name(ih, rec->d.flt[i]);
        if (!what && (rec->errcode & BCF_ERR_TAG_UNDEF)) what = "tag", id = "?";
    }
    if (!what) return 0;
    const char *chrom = rec->rid >= 0 && rec->rid < ih->n[BCF_DT_CTG] ? bcf_hdr_id2name(ih, rec->rid) : "?";
    md_error("%s: cannot write the record at %s:%lld: its %s '%s' is not declared in the input "
             "header (pass the reference so contigs are declared from its index, or add the header "
             "line with bcftools annotate -h)", w->name, chrom, (long long)rec->pos + 1, what,
             id ? id : "?");
    return -2;
}

int md_vcf_write(md_vcf_writer_t *w, bcf1_t *rec)
{
    if (!w || !rec || !w->fp) {
        md_error("no writer or record given");
        return -2;
    }
    if ((rec->errcode & (BCF_ERR_CTG_UNDEF | BCF_ERR_TAG_UNDEF)) ||
        w->in_hdr->n[BCF_DT_CTG] != w->in_n_ctg || w->in_hdr->n[BCF_DT_ID] != w->in_n_id) {
        if (check_new_ids(w, rec) < 0) return -2;
    }
    if (rec->rid < 0 || rec->rid >= w->hdr->n[BCF_DT_CTG]) {
        md_error("%s: record %lld has no valid contig", w->name, w->n_written + 1);
        return -2;
    }
    errno = 0;
    if (bcf_write(w->fp, w->hdr, rec) < 0) {
        md_error("%s: cannot write the record at %s:%lld%s%s", w->name, bcf_seqname_safe(w->hdr, rec),
                 (long long)rec->pos + 1, errno ? ": " : "", errno ? strerror(errno) : "");
        return -2;
    }
    w->n_written++;
    return 0;
}

static void writer_free(md_vcf_writer_t *w)
{
    if (w->hdr) bcf_hdr_destroy(w->hdr);
    free(w->path);
    free(w->tmp);
    free(w->idx_path);
    free(w->idx_tmp);
    free(w);
}

void md_vcf_writer_abort(md_vcf_writer_t *w)
{
    if (!w) return;
    if (w->fp) (void)hts_close(w->fp);
    if (w->tmp) unlink(w->tmp);
    if (w->idx_tmp) unlink(w->idx_tmp);
    writer_free(w);
}

int md_vcf_writer_close(md_vcf_writer_t *w)
{
    int ret = 0;
    if (!w) {
        md_error("no writer given");
        return -2;
    }
    if (w->idx_tmp && bcf_idx_save(w->fp) < 0) {
        md_error("%s: cannot write the index %s: %s", w->name, w->idx_path, strerror(errno));
        ret = -2;
    }
    errno = 0;
    int c = hts_close(w->fp);
    w->fp = NULL;
    if (c != 0) {
        md_error("%s: error while finishing the file%s%s", w->name, errno ? ": " : " (disk full?)",
                 errno ? strerror(errno) : "");
        ret = -2;
    }
    if (ret == 0 && w->tmp) {
        /* the index was saved before the last block of data: make it newer, or htslib warns */
        if (w->idx_tmp) (void)utimensat(AT_FDCWD, w->idx_tmp, NULL, 0);
        if (rename(w->tmp, w->path) != 0) {
            md_error("%s: cannot rename %s to it: %s", w->name, w->tmp, strerror(errno));
            ret = -2;
        } else {
            free(w->tmp);
            w->tmp = NULL;
            if (w->idx_tmp && rename(w->idx_tmp, w->idx_path) != 0) {
                /* the data is in place; do not leave an older index beside it */
                md_error("%s: cannot rename %s to %s: %s", w->name, w->idx_tmp, w->idx_path,
                         strerror(errno));
                unlink(w->idx_path);
                ret = -2;
            } else if (w->idx_tmp) {
                free(w->idx_tmp);
                w->idx_tmp = NULL;
            }
        }
    }
    if (w->tmp) unlink(w->tmp);
    if (w->idx_tmp) unlink(w->idx_tmp);
    writer_free(w);
    return ret;
}

/* ---- provenance lines --------------------------------------------------------------------- */

char *md_vcf_command_line(int argc, char *const *argv)
{
    kstring_t s = {0, 0, NULL};
    int r = kputs("##mamba-dnaCommand=", &s) < 0;
    for (int i = 0; i < argc; i++) {
        if (i) r |= kputc(' ', &s) < 0;
        for (const char *p = argv[i] ? argv[i] : ""; *p; p++) /* a header line is one line */
            r |= kputc(*p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p, &s) < 0;
    }
    time_t t = time(NULL);
    struct tm tm;
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    char *end = NULL, date[64];
    if (sde && *sde) {
        long long v = strtoll(sde, &end, 10);
        if (!*end && v >= 0) t = (time_t)v;
    }
    if (sde && *sde && end && !*end ? !gmtime_r(&t, &tm) : !localtime_r(&t, &tm)) memset(&tm, 0, sizeof tm);
    strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
    r |= ksprintf(&s, "; Date=%s", date) < 0;
    if (r) {
        md_error("out of memory");
        free(s.s);
        return NULL;
    }
    return ks_release(&s);
}

char *md_vcf_version_line(void)
{
    kstring_t s = {0, 0, NULL};
    if (ksprintf(&s, "##mamba-dnaVersion=%s+htslib-%s", MD_VERSION, hts_version()) < 0) {
        md_error("out of memory");
        free(s.s);
        return NULL;
    }
    return ks_release(&s);
}
