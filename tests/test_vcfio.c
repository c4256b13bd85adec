/* test_vcfio.c: cmocka tests of formats/vcfio on the committed real fixtures (tests/data/real/: 803
 * 1000 Genomes records of chr20:1,000,000-1,100,000 and that slice of GRCh37 as contig "20"): reading
 * VCF.gz/BCF/plain/stdin, regions against a brute-force oracle, bad inputs, the four output types,
 * header additions, on-the-fly indexes, temporary files, full-disk errors, and outside validation with
 * bcftools and pysam when they are installed. Run from the repository root. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <htslib/bgzf.h>
#include <htslib/faidx.h>
#include <htslib/hts.h>
#include <htslib/vcf.h>
#include <zlib.h>

#include "md.h"
#include "vcfio.h"

#define FIX_VCF "tests/data/real/chr20_1M.sites.vcf.gz"
#define FIX_BCF "tests/data/real/chr20_1M.sites.bcf"
#define FIX_3S  "tests/data/real/chr20_1M.3samples.vcf.gz"
#define FIX_FA  "tests/data/real/chr20_1M.fa.gz"
#define FIX_N   803
#define FIX_LEN 100001

#define LLR_LINE "##INFO=<ID=MAMBA_LLR,Number=A,Type=Float,Description=\"test score\">"

static char tmpdir[256];

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/md-vcfio-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) return -1;
    md_log_level = MD_LOG_ERROR; /* warnings from expected failures would clutter the output */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int have_tool(const char *cmd)
{
    char buf[256];
    snprintf(buf, sizeof buf, "command -v %s >/dev/null 2>&1", cmd);
    return system(buf) == 0;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Number of entries in tmpdir whose name contains `s`. */
static int count_in_tmpdir(const char *s)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d)))
        if (strstr(e->d_name, s)) n++;
    closedir(d);
    return n;
}

static void copy_file(const char *src, const char *dst, long limit)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    char buf[8192];
    size_t n;
    long total = 0;
    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (limit >= 0 && total + (long)n > limit) n = limit - total;
        assert_int_equal(fwrite(buf, 1, n, out), n);
        total += n;
        if (limit >= 0 && total >= limit) break;
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* The fixture decompressed, as text. */
static char *fixture_text(const char *path, size_t *len)
{
    BGZF *fp = bgzf_open(path, "r");
    size_t m = 1 << 16, l = 0;
    char *s = malloc(m);
    ssize_t n;
    assert_non_null(fp);
    while ((n = bgzf_read(fp, s + l, m - l)) > 0) {
        l += n;
        if (l == m) s = realloc(s, m *= 2);
    }
    assert_int_equal(n, 0);
    bgzf_close(fp);
    s[l] = 0;
    *len = l;
    return s;
}

static void write_text(const char *path, const char *s, size_t l)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(s, 1, l, f), l);
    assert_int_equal(fclose(f), 0);
}

typedef struct {
    int rid;
    hts_pos_t pos, rlen;
    unsigned long key; /* hash of ID and alleles */
} rec_t;

static unsigned long rec_key(bcf1_t *r)
{
    unsigned long h = 5381;
    for (const char *p = r->d.id; *p; p++) h = h * 33 + (unsigned char)*p;
    for (int i = 0; i < r->n_allele; i++) {
        h = h * 33 + ',';
        for (const char *p = r->d.allele[i]; *p; p++) h = h * 33 + (unsigned char)*p;
    }
    return h;
}

/* Reads everything; returns the count, or < 0 when opening or reading failed. */
static int read_all(const char *path, const md_vcf_ropts_t *o, rec_t **out)
{
    md_vcf_reader_t *r = md_vcf_open(path, o);
    if (!r) return -10;
    bcf1_t *b = bcf_init();
    int n = 0, m = 0, ret;
    rec_t *v = NULL;
    while ((ret = md_vcf_read(r, b)) == 0) {
        if (out) {
            if (n == m) v = realloc(v, (m = m ? 2 * m : 1024) * sizeof *v);
            v[n].rid = b->rid;
            v[n].pos = b->pos;
            v[n].rlen = b->rlen;
            v[n].key = rec_key(b);
        }
        n++;
    }
    bcf_destroy(b);
    int c = md_vcf_close(r); /* after a read error, closing reports it again */
    if (ret == -1) assert_int_equal(c, 0);
    if (out) *out = v;
    else free(v);
    return ret == -1 ? n : ret;
}

/* Brute force: the records of all[] overlapping any of the 1-based inclusive intervals. */
static int oracle(const rec_t *all, int n, const hts_pos_t (*iv)[2], int niv, rec_t *out)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < niv; j++)
            if (all[i].pos < iv[j][1] && all[i].pos + all[i].rlen > iv[j][0] - 1) {
                out[k++] = all[i];
                break;
            }
    return k;
}

static void assert_same_records(const rec_t *a, int na, const rec_t *b, int nb)
{
    assert_int_equal(na, nb);
    for (int i = 0; i < na; i++) {
        assert_int_equal(a[i].pos, b[i].pos);
        assert_int_equal(a[i].key, b[i].key);
    }
}

/* The score written in tests: exact in binary and in 6 significant digits; missing for non-SNVs. */
static float test_llr(bcf1_t *b, int i)
{
    return (float)(b->pos % 1000) / 8.0f - 60.0f + (float)i;
}

static int is_snv(bcf1_t *b, int i)
{
    return strlen(b->d.allele[0]) == 1 && strlen(b->d.allele[i]) == 1;
}

/* Copies FIX_VCF (or `in`) to `out` with MAMBA_LLR set, through the writer. */
static void write_scored(const char *in, const char *out, char otype, const faidx_t *fai, int idx)
{
    md_vcf_reader_t *r = md_vcf_open(in, NULL);
    assert_non_null(r);
    char *argv[] = {"score", "-i", (char *)in, "-o", (char *)out};
    char *cmd = md_vcf_command_line(5, argv), *ver = md_vcf_version_line();
    const char *extra[] = {LLR_LINE, ver, cmd};
    md_vcf_writer_t *w = md_vcf_writer_open(out, otype, md_vcf_header(r), extra, 3, fai, idx);
    assert_non_null(w);
    bcf_hdr_t *oh = md_vcf_writer_header(w);
    bcf1_t *b = bcf_init();
    float v[16];
    int ret;
    while ((ret = md_vcf_read(r, b)) == 0) {
        int na = b->n_allele - 1;
        assert_true(na >= 1 && na <= 16);
        for (int i = 0; i < na; i++) {
            if (is_snv(b, i + 1)) v[i] = test_llr(b, i);
            else bcf_float_set_missing(v[i]);
        }
        assert_int_equal(bcf_update_info_float(oh, b, "MAMBA_LLR", v, na), 0);
        assert_int_equal(md_vcf_write(w, b), 0);
    }
    assert_int_equal(ret, -1);
    assert_int_equal(md_vcf_writer_close(w), 0);
    assert_int_equal(md_vcf_close(r), 0);
    bcf_destroy(b);
    free(cmd);
    free(ver);
}

/* Reads a scored output back and checks every value against the input. */
static void check_scored(const char *out)
{
    md_vcf_reader_t *a = md_vcf_open(FIX_VCF, NULL), *o = md_vcf_open(out, NULL);
    assert_non_null(a);
    assert_non_null(o);
    bcf_hdr_t *ha = md_vcf_header(a), *ho = md_vcf_header(o);
    bcf1_t *x = bcf_init(), *y = bcf_init();
    float *fx = NULL, *fy = NULL;
    int nfx = 0, nfy = 0, n = 0, ra, ro;
    int idx = bcf_hdr_id2int(ho, BCF_DT_ID, "MAMBA_LLR");
    assert_true(idx >= 0);
    assert_true(bcf_hdr_idinfo_exists(ho, BCF_HL_INFO, idx));
    assert_int_equal(bcf_hdr_id2type(ho, BCF_HL_INFO, idx), BCF_HT_REAL);
    assert_int_equal(bcf_hdr_id2length(ho, BCF_HL_INFO, idx), BCF_VL_A);
    while ((ra = md_vcf_read(a, x)) == 0) {
        ro = md_vcf_read(o, y);
        assert_int_equal(ro, 0);
        assert_int_equal(x->pos, y->pos);
        assert_string_equal(x->d.id, y->d.id);
        assert_int_equal(x->n_allele, y->n_allele);
        for (int i = 0; i < x->n_allele; i++) assert_string_equal(x->d.allele[i], y->d.allele[i]);
        /* input INFO passes through unchanged */
        assert_int_equal(bcf_get_info_float(ha, x, "AF", &fx, &nfx), 1);
        assert_int_equal(bcf_get_info_float(ho, y, "AF", &fy, &nfy), 1);
        assert_true(fx[0] == fy[0]);
        int na = x->n_allele - 1;
        assert_int_equal(bcf_get_info_float(ho, y, "MAMBA_LLR", &fy, &nfy), na);
        for (int i = 0; i < na; i++) {
            if (is_snv(x, i + 1)) assert_true(fy[i] == test_llr(x, i));
            else assert_true(bcf_float_is_missing(fy[i]));
        }
        n++;
    }
    assert_int_equal(ra, -1);
    assert_int_equal(md_vcf_read(o, y), -1);
    assert_int_equal(n, FIX_N);
    free(fx);
    free(fy);
    bcf_destroy(x);
    bcf_destroy(y);
    md_vcf_close(a);
    md_vcf_close(o);
}

static bcf_hrec_t *contig_hrec(bcf_hdr_t *h, const char *id)
{
    return bcf_hdr_get_hrec(h, BCF_HL_CTG, "ID", id, NULL);
}

static const char *hrec_val(bcf_hrec_t *h, const char *key)
{
    int k = h ? bcf_hrec_find_key(h, key) : -1;
    return k >= 0 ? h->vals[k] : NULL;
}

static faidx_t *load_fai(void)
{
    faidx_t *fai = fai_load3(FIX_FA, NULL, NULL, 0);
    assert_non_null(fai);
    return fai;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void test_read_vcfgz(void **state)
{
    (void)state;
    md_vcf_reader_t *r = md_vcf_open(FIX_VCF, NULL);
    assert_non_null(r);
    bcf_hdr_t *h = md_vcf_header(r);
    assert_string_equal(md_vcf_name(r), FIX_VCF);
    assert_int_equal(bcf_hdr_nsamples(h), 0);
    bcf1_t *b = bcf_init();
    float *af = NULL;
    int32_t *an = NULL;
    int naf = 0, nan = 0, n = 0, ret;
    hts_pos_t last = -1;
    while ((ret = md_vcf_read(r, b)) == 0) {
        if (n == 0) { /* GRCh37 20:1,000,226 A>T, shifted by 999,999 */
            assert_string_equal(bcf_seqname(h, b), "20");
            assert_int_equal(b->pos, 226);
            assert_string_equal(b->d.id, "rs376678365");
            assert_string_equal(b->d.allele[0], "A");
            assert_string_equal(b->d.allele[1], "T");
            assert_int_equal(bcf_get_info_float(h, b, "AF", &af, &naf), 1);
            assert_true(af[0] > 0.001988f && af[0] < 0.001989f);
        }
        assert_true(b->pos >= last); /* sorted */
        last = b->pos;
        assert_int_equal(bcf_get_info_int32(h, b, "AN", &an, &nan), 1);
        assert_int_equal(an[0], 600); /* 300 samples, diploid */
        n++;
    }
    assert_int_equal(ret, -1);
    assert_int_equal(n, FIX_N);
    assert_int_equal(last, 99890); /* rs182058953 */
    assert_int_equal(md_vcf_read(r, b), -1); /* stays at EOF */
    free(af);
    free(an);
    bcf_destroy(b);
    assert_int_equal(md_vcf_close(r), 0);
}

static void test_read_bcf_plain_stdin(void **state)
{
    (void)state;
    rec_t *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    int na = read_all(FIX_VCF, NULL, &a);
    assert_int_equal(na, FIX_N);
    assert_int_equal(read_all(FIX_BCF, NULL, &b), FIX_N);
    assert_same_records(a, na, b, FIX_N);

    size_t l;
    char *txt = fixture_text(FIX_VCF, &l);
    write_text(tpath("plain.vcf"), txt, l);
    free(txt);
    FILE *fa = fopen(tpath("plain.vcf"), "a");
    fputs("\n", fa); /* a blank last line, as hand-edited files have */
    fclose(fa);
    assert_int_equal(read_all(tpath("plain.vcf"), NULL, &c), FIX_N);
    assert_same_records(a, na, c, FIX_N);

    /* "-" reads stdin */
    int saved = dup(0), fd = open(FIX_VCF, O_RDONLY);
    assert_true(saved >= 0 && fd >= 0);
    assert_true(dup2(fd, 0) == 0);
    close(fd);
    md_vcf_reader_t *r = md_vcf_open("-", NULL);
    assert_non_null(r);
    assert_string_equal(md_vcf_name(r), "stdin");
    md_vcf_close(r);
    assert_true(dup2(saved, 0) == 0);
    close(saved);
    fd = open(FIX_BCF, O_RDONLY);
    saved = dup(0);
    dup2(fd, 0);
    close(fd);
    int nd = read_all("-", NULL, &d);
    dup2(saved, 0);
    close(saved);
    assert_same_records(a, na, d, nd);
    free(a); free(b); free(c); free(d);
}

static void test_read_samples(void **state)
{
    (void)state;
    md_vcf_reader_t *r = md_vcf_open(FIX_3S, NULL);
    assert_non_null(r);
    bcf_hdr_t *h = md_vcf_header(r);
    assert_int_equal(bcf_hdr_nsamples(h), 3);
    assert_string_equal(h->samples[0], "HG00096");
    bcf1_t *b = bcf_init();
    int32_t *gt = NULL;
    int ngt = 0, n = 0, nalt = 0;
    while (md_vcf_read(r, b) == 0) {
        assert_int_equal(bcf_get_genotypes(h, b, &gt, &ngt), 6);
        for (int i = 0; i < 6; i++) {
            assert_false(bcf_gt_is_missing(gt[i]));
            nalt += bcf_gt_allele(gt[i]) > 0;
        }
        n++;
    }
    assert_int_equal(n, FIX_N);
    assert_true(nalt > 0);
    free(gt);
    bcf_destroy(b);
    md_vcf_close(r);
}

/* ---- regions ------------------------------------------------------------------------------ */

static void check_regions(const char *path, const rec_t *all, int nall)
{
    static const struct {
        const char *reg;
        hts_pos_t iv[3][2];
        int niv;
    } cases[] = {
        {"20:1000-2000", {{1000, 2000}}, 1},
        {"20:1000-2000,20:1500-3000", {{1000, 3000}}, 1},           /* overlapping: no duplicates */
        {"20:20000-30000,20:1000-1500", {{1000, 1500}, {20000, 30000}}, 2}, /* unsorted input */
        {"20:1000-1999,20:2000-2999", {{1000, 2999}}, 1},           /* adjacent */
        {"20:98000-", {{98000, 200000}}, 1},
        {"20:99891", {{99891, 99891}}, 1},                          /* the last record */
        {"20", {{1, 200000}}, 1},
        {"chr20:1-50000,20:40000-41000", {{40000, 41000}}, 1},      /* unknown contig skipped */
    };
    rec_t *exp = malloc(nall * sizeof *exp), *got = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        md_vcf_ropts_t o;
        md_vcf_ropts_init(&o);
        o.regions = cases[i].reg;
        int ne = oracle(all, nall, cases[i].iv, cases[i].niv, exp);
        int ng = read_all(path, &o, &got);
        assert_true(ne > 0);
        assert_same_records(exp, ne, got, ng);
        free(got);
        got = NULL;
    }
    md_vcf_ropts_t o;
    md_vcf_ropts_init(&o);
    o.regions = "chrX:1-100";
    assert_int_equal(read_all(path, &o, NULL), 0);
    free(exp);
}

static void test_regions(void **state)
{
    (void)state;
    rec_t *all = NULL;
    int n = read_all(FIX_VCF, NULL, &all);
    assert_int_equal(n, FIX_N);
    check_regions(FIX_VCF, all, n); /* .tbi */
    check_regions(FIX_BCF, all, n); /* .csi */

    /* -R: BED is 0-based half-open, other files 1-based inclusive */
    static const hts_pos_t iv[2][2] = {{1000, 2000}, {50000, 52000}};
    rec_t *exp = malloc(n * sizeof *exp), *got = NULL;
    int ne = oracle(all, n, iv, 2, exp);
    const char bed[] = "# comment\n20\t49999\t52000\n20\t999\t2000\n";
    const char tab[] = "20\t1000\t2000\n20\t50000\t52000\n";
    write_text(tpath("r.bed"), bed, sizeof bed - 1);
    write_text(tpath("r.txt"), tab, sizeof tab - 1);
    md_vcf_ropts_t o;
    md_vcf_ropts_init(&o);
    o.regions_file = tpath("r.bed");
    assert_same_records(exp, ne, got, read_all(FIX_VCF, &o, &got));
    free(got);
    o.regions_file = tpath("r.txt");
    assert_same_records(exp, ne, got, read_all(FIX_BCF, &o, &got));
    free(got);
    o.regions_file = NULL;
    o.regions = "";
    assert_null(md_vcf_open(FIX_VCF, &o));
    assert_non_null(strstr(md_last_error(), "empty region list"));
    o.regions = "20:2000-1000";
    assert_null(md_vcf_open(FIX_VCF, &o));
    assert_non_null(strstr(md_last_error(), "invalid region 20:2000-1000"));
    o.regions = "20:abc";
    assert_null(md_vcf_open(FIX_BCF, &o));
    assert_non_null(strstr(md_last_error(), "cannot parse the regions '20:abc'"));
    o.regions = NULL;
    o.regions_file = tpath("missing.bed");
    assert_null(md_vcf_open(FIX_VCF, &o));
    assert_non_null(strstr(md_last_error(), "missing.bed"));
    o.regions = "20:1-10";
    o.regions_file = tpath("r.bed");
    assert_null(md_vcf_open(FIX_VCF, &o)); /* -r and -R together */
    free(exp);
    free(all);
}

static void test_regions_need_index(void **state)
{
    (void)state;
    md_vcf_ropts_t o;
    md_vcf_ropts_init(&o);
    o.regions = "20:1000-2000";
    copy_file(FIX_VCF, tpath("noidx.vcf.gz"), -1);
    assert_null(md_vcf_open(tpath("noidx.vcf.gz"), &o));
    assert_non_null(strstr(md_last_error(), "need an index"));
    assert_non_null(strstr(md_last_error(), "noidx.vcf.gz"));
    copy_file(FIX_BCF, tpath("noidx.bcf"), -1);
    assert_null(md_vcf_open(tpath("noidx.bcf"), &o));
    assert_non_null(strstr(md_last_error(), "need an index"));
    size_t l;
    char *txt = fixture_text(FIX_VCF, &l);
    write_text(tpath("plain2.vcf"), txt, l);
    free(txt);
    assert_null(md_vcf_open(tpath("plain2.vcf"), &o));
    assert_non_null(strstr(md_last_error(), "bgzipped"));
    assert_null(md_vcf_open("-", &o));
    assert_non_null(strstr(md_last_error(), "stdin"));
    /* without regions the unindexed copies read fine */
    assert_int_equal(read_all(tpath("noidx.vcf.gz"), NULL, NULL), FIX_N);
}

/* ---- bad inputs --------------------------------------------------------------------------- */

/* Writes the fixture as BGZF with a block every `every` lines, optionally without the EOF block. */
static void write_blocks(const char *path, int every, int eof_block)
{
    size_t l;
    char *txt = fixture_text(FIX_VCF, &l);
    BGZF *fp = bgzf_open(path, "w");
    assert_non_null(fp);
    int nl = 0;
    char *p = txt, *e;
    while ((e = strchr(p, '\n'))) {
        assert_int_equal(bgzf_write(fp, p, e - p + 1), e - p + 1);
        if (++nl % every == 0) assert_int_equal(bgzf_flush(fp), 0);
        p = e + 1;
    }
    assert_int_equal(bgzf_close(fp), 0);
    free(txt);
    if (!eof_block) { /* drop the 28-byte empty EOF block */
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(truncate(path, st.st_size - 28), 0);
    }
}

static void test_bad_inputs(void **state)
{
    (void)state;
    assert_null(md_vcf_open(NULL, NULL));
    assert_null(md_vcf_open(tpath("does-not-exist.vcf"), NULL));
    assert_non_null(strstr(md_last_error(), "does-not-exist.vcf"));
    assert_non_null(strstr(md_last_error(), "No such file"));

    write_text(tpath("empty.vcf"), "", 0);
    assert_null(md_vcf_open(tpath("empty.vcf"), NULL));
    assert_non_null(strstr(md_last_error(), "empty.vcf: not a VCF/BCF file"));

    assert_null(md_vcf_open(FIX_FA, NULL)); /* a FASTA */
    assert_non_null(strstr(md_last_error(), "chr20_1M.fa.gz: not a VCF/BCF file"));
    const char junk[] = "chrom\tpos\tref\talt\n20\t5\tA\tC\n";
    write_text(tpath("junk.tsv"), junk, sizeof junk - 1);
    assert_null(md_vcf_open(tpath("junk.tsv"), NULL));
    assert_non_null(strstr(md_last_error(), "not a VCF/BCF file"));

    /* htslib 1.16 parses a line cut short without complaint; such records are refused */
    const char shortl[] = "##fileformat=VCFv4.2\n##contig=<ID=20>\n"
                          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                          "20\t5\t.\tA\tC\t.\t.\t.\n20\t342\trs150957752\tC600\n20\t9\t.\tA\tC\t.\t.\t.\n";
    write_text(tpath("short.vcf"), shortl, sizeof shortl - 1);
    md_vcf_reader_t *r = md_vcf_open(tpath("short.vcf"), NULL);
    bcf1_t *b = bcf_init();
    assert_non_null(r);
    assert_int_equal(md_vcf_read(r, b), 0);
    assert_true(md_vcf_read(r, b) < -1);
    assert_non_null(strstr(md_last_error(), "short.vcf: malformed record 2: 4 columns"));
    assert_int_equal(md_vcf_close(r), 0);
    bcf_destroy(b);

    /* cut in the middle of the only data block */
    copy_file(FIX_VCF, tpath("cut.vcf.gz"), 6000);
    assert_null(md_vcf_open(tpath("cut.vcf.gz"), NULL));
    assert_non_null(strstr(md_last_error(), "truncated"));
    copy_file(FIX_BCF, tpath("cut.bcf"), 9000);
    assert_null(md_vcf_open(tpath("cut.bcf"), NULL));
    assert_non_null(strstr(md_last_error(), "truncated"));

    /* plain gzip (not BGZF) reads, and cut short fails */
    size_t l;
    char *txt = fixture_text(FIX_VCF, &l);
    gzFile gz = gzopen(tpath("plain.vcf.gz"), "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, txt, (unsigned)l), (int)l);
    assert_int_equal(gzclose(gz), Z_OK);
    free(txt);
    assert_int_equal(read_all(tpath("plain.vcf.gz"), NULL, NULL), FIX_N);
    struct stat st;
    assert_int_equal(stat(tpath("plain.vcf.gz"), &st), 0);
    copy_file(tpath("plain.vcf.gz"), tpath("plaincut.vcf.gz"), st.st_size / 2);
    assert_true(read_all(tpath("plaincut.vcf.gz"), NULL, NULL) < -1);

    /* cut exactly between blocks: every block is whole, only the EOF marker tells */
    write_blocks(tpath("blocks.vcf.gz"), 100, 1);
    assert_int_equal(read_all(tpath("blocks.vcf.gz"), NULL, NULL), FIX_N);
    write_blocks(tpath("noeof.vcf.gz"), 100, 0);
    assert_null(md_vcf_open(tpath("noeof.vcf.gz"), NULL));
    assert_non_null(strstr(md_last_error(), "truncated"));

    /* damage inside a later block: the header reads, then a read fails (never a quiet EOF) */
    write_blocks(tpath("bad.vcf.gz"), 100, 1);
    FILE *f = fopen(tpath("bad.vcf.gz"), "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -3000, SEEK_END), 0);
    const char garbage[64] = "garbage garbage garbage garbage garbage garbage garbage garbage";
    assert_int_equal(fwrite(garbage, 1, sizeof garbage, f), sizeof garbage);
    assert_int_equal(fclose(f), 0);
    int n = read_all(tpath("bad.vcf.gz"), NULL, NULL);
    assert_true(n < -1);
    assert_non_null(strstr(md_last_error(), "bad.vcf.gz: read error after"));
}

/* ---- writing ------------------------------------------------------------------------------ */

static void check_format(const char *path, enum htsExactFormat fmt, enum htsCompression comp)
{
    htsFile *fp = hts_open(path, "r");
    assert_non_null(fp);
    assert_int_equal(hts_get_format(fp)->format, fmt);
    assert_int_equal(hts_get_format(fp)->compression, comp);
    hts_close(fp);
}

static void test_otype_from_path(void **state)
{
    (void)state;
    assert_int_equal(md_vcf_otype_from_path("a.vcf"), 'v');
    assert_int_equal(md_vcf_otype_from_path("a.vcf.gz"), 'z');
    assert_int_equal(md_vcf_otype_from_path("dir/A.VCF.BGZ"), 'z');
    assert_int_equal(md_vcf_otype_from_path("a.bcf"), 'b');
    assert_int_equal(md_vcf_otype_from_path("A.BCF"), 'b');
    assert_int_equal(md_vcf_otype_from_path("-"), 'v');
    assert_int_equal(md_vcf_otype_from_path("scores.txt"), 'v');
    assert_int_equal(md_vcf_otype_from_path("x.gz"), 'v');
}

static void test_write_types(void **state)
{
    (void)state;
    write_scored(FIX_VCF, tpath("out.vcf"), 0, NULL, 0);
    check_format(tpath("out.vcf"), vcf, no_compression);
    check_scored(tpath("out.vcf"));
    write_scored(FIX_VCF, tpath("out.vcf.gz"), 0, NULL, 0);
    check_format(tpath("out.vcf.gz"), vcf, bgzf);
    check_scored(tpath("out.vcf.gz"));
    write_scored(FIX_VCF, tpath("out.bcf"), 0, NULL, 0);
    check_format(tpath("out.bcf"), bcf, bgzf);
    check_scored(tpath("out.bcf"));
    write_scored(FIX_VCF, tpath("out.ubcf"), 'u', NULL, 0);
    check_format(tpath("out.ubcf"), bcf, no_compression);
    check_scored(tpath("out.ubcf"));
    write_scored(FIX_BCF, tpath("explicit.vcf"), 'z', NULL, 0); /* -O wins over the name */
    check_format(tpath("explicit.vcf"), vcf, bgzf);
    check_scored(tpath("explicit.vcf"));
    assert_int_equal(count_in_tmpdir(".tmp"), 0);
    md_vcf_reader_t *r = md_vcf_open(FIX_VCF, NULL);
    assert_null(md_vcf_writer_open(tpath("otype-q.vcf"), 'q', md_vcf_header(r), NULL, 0, NULL, 0));
    assert_non_null(strstr(md_last_error(), "unknown output type 'q'"));
    assert_int_equal(count_in_tmpdir("otype-q"), 0);
    md_vcf_close(r);
}

static void test_header_lines(void **state)
{
    (void)state;
    faidx_t *fai = load_fai();
    setenv("SOURCE_DATE_EPOCH", "0", 1);
    write_scored(FIX_VCF, tpath("hdr.vcf"), 0, fai, 0);
    unsetenv("SOURCE_DATE_EPOCH");
    md_vcf_reader_t *r = md_vcf_open(tpath("hdr.vcf"), NULL);
    assert_non_null(r);
    bcf_hdr_t *h = md_vcf_header(r);
    /* the input declares ##contig=<ID=20> without a length: it gets the reference's */
    assert_non_null(contig_hrec(h, "20"));
    assert_string_equal(hrec_val(contig_hrec(h, "20"), "length"), "100001");
    assert_int_equal(h->id[BCF_DT_CTG][bcf_hdr_name2id(h, "20")].val->info[0], FIX_LEN);
    kstring_t s = {0, 0, NULL};
    assert_int_equal(bcf_hdr_format(h, 0, &s), 0);
    assert_non_null(strstr(s.s, "##contig=<ID=20,length=100001>\n"));
    assert_non_null(strstr(s.s, LLR_LINE "\n"));
    assert_non_null(strstr(s.s, "##mamba-dnaVersion=" MD_VERSION "+htslib-"));
    assert_non_null(strstr(s.s, "##mamba-dnaCommand=score -i " FIX_VCF " -o "));
    assert_non_null(strstr(s.s, "; Date=Thu Jan  1 00:00:00 1970\n"));
    /* the input header is kept: its INFO lines and its provenance */
    assert_non_null(strstr(s.s, "##INFO=<ID=AF,Number=A,Type=Float,Description=\"Allele Frequency\">"));
    assert_non_null(strstr(s.s, "##source=G2H"));
    free(s.s);
    md_vcf_close(r);

    /* a header without ##contig lines: with the reference given to the reader, records keep their
     * contig id and the output declares it */
    size_t l;
    char *txt = fixture_text(FIX_VCF, &l), *c = strstr(txt, "##contig=<ID=20>\n");
    assert_non_null(c);
    memmove(c, c + 17, strlen(c + 17) + 1);
    write_text(tpath("noctg.vcf"), txt, strlen(txt));
    free(txt);
    md_vcf_ropts_t o;
    md_vcf_ropts_init(&o);
    o.fai = fai;
    r = md_vcf_open(tpath("noctg.vcf"), &o);
    assert_non_null(r);
    md_vcf_writer_t *w = md_vcf_writer_open(tpath("noctg.out.vcf"), 0, md_vcf_header(r), NULL, 0, fai, 0);
    assert_non_null(w);
    bcf1_t *b = bcf_init();
    int n = 0;
    while (md_vcf_read(r, b) == 0) {
        assert_int_equal(md_vcf_write(w, b), 0);
        n++;
    }
    assert_int_equal(n, FIX_N);
    assert_int_equal(md_vcf_writer_close(w), 0);
    md_vcf_close(r);
    md_vcf_reader_t *r2 = md_vcf_open(tpath("noctg.out.vcf"), NULL);
    assert_string_equal(hrec_val(contig_hrec(md_vcf_header(r2), "20"), "length"), "100001");
    md_vcf_close(r2);
    assert_int_equal(read_all(tpath("noctg.out.vcf"), NULL, NULL), FIX_N);

    /* without it, htslib defines '20' mid-stream; the writer refuses rather than mislabel records */
    r = md_vcf_open(tpath("noctg.vcf"), NULL);
    w = md_vcf_writer_open(tpath("noctg.bad.vcf"), 0, md_vcf_header(r), NULL, 0, fai, 0);
    assert_non_null(w);
    assert_int_equal(md_vcf_read(r, b), 0);
    assert_true(md_vcf_write(w, b) < -1);
    assert_non_null(strstr(md_last_error(), "contig '20' is not declared"));
    md_vcf_writer_abort(w);
    md_vcf_close(r);
    assert_false(file_exists(tpath("noctg.bad.vcf")));

    /* an undeclared INFO tag, defined by htslib while parsing, is refused too */
    const char undecl[] = "##fileformat=VCFv4.2\n##contig=<ID=20>\n"
                          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                          "20\t5\t.\tA\tC\t.\t.\t.\n20\t6\t.\tA\tC\t.\t.\tXX=1\n";
    write_text(tpath("undecl.vcf"), undecl, sizeof undecl - 1);
    r = md_vcf_open(tpath("undecl.vcf"), NULL);
    const char *ex[] = {LLR_LINE};
    w = md_vcf_writer_open(tpath("undecl.out.bcf"), 0, md_vcf_header(r), ex, 1, NULL, 0);
    assert_int_equal(md_vcf_read(r, b), 0);
    assert_int_equal(md_vcf_write(w, b), 0);
    assert_int_equal(md_vcf_read(r, b), 0);
    assert_true(md_vcf_write(w, b) < -1);
    assert_non_null(strstr(md_last_error(), "INFO tag 'XX' is not declared"));
    md_vcf_writer_abort(w);
    md_vcf_close(r);
    bcf_destroy(b);
    fai_destroy(fai);
}

static void test_extra_lines(void **state)
{
    (void)state;
    md_vcf_reader_t *r = md_vcf_open(FIX_VCF, NULL);
    bcf_hdr_t *h = md_vcf_header(r);
    const char *clash[] = {"##INFO=<ID=AF,Number=1,Type=Integer,Description=\"other\">"};
    assert_null(md_vcf_writer_open(tpath("e1.vcf"), 0, h, clash, 1, NULL, 0));
    assert_non_null(strstr(md_last_error(), "INFO/AF is already defined with Number=A"));
    const char *bad[] = {"INFO=<ID=X,Number=1,Type=Float,Description=\"x\">"};
    assert_null(md_vcf_writer_open(tpath("e2.vcf"), 0, h, bad, 1, NULL, 0));
    assert_non_null(strstr(md_last_error(), "starting with '##'"));
    const char *two[] = {"##a=1\n##b=2"};
    assert_null(md_vcf_writer_open(tpath("e3.vcf"), 0, h, two, 1, NULL, 0));
    assert_int_equal(count_in_tmpdir("e1.vcf") + count_in_tmpdir("e2.vcf") + count_in_tmpdir("e3.vcf"), 0);
    /* same Number and Type: the description is updated in place, the id stays */
    int af = bcf_hdr_id2int(h, BCF_DT_ID, "AF");
    const char *same[] = {"##INFO=<ID=AF,Number=A,Type=Float,Description=\"1000G phase 3 AF\">"};
    md_vcf_writer_t *w = md_vcf_writer_open(tpath("e4.vcf"), 0, h, same, 1, NULL, 0);
    assert_non_null(w);
    bcf_hdr_t *oh = md_vcf_writer_header(w);
    assert_int_equal(bcf_hdr_id2int(oh, BCF_DT_ID, "AF"), af);
    bcf_hrec_t *hr = bcf_hdr_get_hrec(oh, BCF_HL_INFO, "ID", "AF", NULL);
    assert_string_equal(hrec_val(hr, "Description"), "\"1000G phase 3 AF\"");
    assert_int_equal(md_vcf_writer_close(w), 0);
    md_vcf_close(r);
}

static void test_write_index(void **state)
{
    (void)state;
    rec_t *all = NULL, *exp, *got = NULL;
    int n = read_all(FIX_VCF, NULL, &all);
    static const hts_pos_t iv[1][2] = {{30000, 45000}};
    exp = malloc(n * sizeof *exp);
    int ne = oracle(all, n, iv, 1, exp);
    md_vcf_ropts_t o;
    md_vcf_ropts_init(&o);
    o.regions = "20:30000-45000";
    static const struct { const char *name; char t; int idx; const char *ext, *magic; } cases[] = {
        {"i.vcf.gz", 0, MD_VCF_IDX_CSI, ".csi", "CSI\1"},
        {"t.vcf.gz", 'z', MD_VCF_IDX_TBI, ".tbi", "TBI\1"},
        {"i.bcf", 0, MD_VCF_IDX_CSI, ".csi", "CSI\1"},
    };
    faidx_t *fai = load_fai(); /* with lengths, CSI levels come from the contig length */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char idx[600];
        write_scored(FIX_VCF, tpath(cases[i].name), cases[i].t, i == 0 ? fai : NULL, cases[i].idx);
        snprintf(idx, sizeof idx, "%s%s", tpath(cases[i].name), cases[i].ext);
        assert_true(file_exists(idx));
        BGZF *fp = bgzf_open(idx, "r");
        char magic[4];
        assert_non_null(fp);
        assert_int_equal(bgzf_read(fp, magic, 4), 4);
        assert_memory_equal(magic, cases[i].magic, 4);
        bgzf_close(fp);
        assert_same_records(exp, ne, got, read_all(tpath(cases[i].name), &o, &got));
        free(got);
        got = NULL;
        check_scored(tpath(cases[i].name));
    }
    assert_int_equal(count_in_tmpdir(".tmp"), 0);
    fai_destroy(fai);

    /* combinations that cannot be indexed */
    md_vcf_reader_t *r = md_vcf_open(FIX_VCF, NULL);
    bcf_hdr_t *h = md_vcf_header(r);
    assert_null(md_vcf_writer_open(tpath("nidx.vcf"), 0, h, NULL, 0, NULL, MD_VCF_IDX_CSI));
    assert_non_null(strstr(md_last_error(), "needs bgzipped output"));
    assert_null(md_vcf_writer_open(tpath("nidx.bcf"), 'u', h, NULL, 0, NULL, MD_VCF_IDX_CSI));
    assert_null(md_vcf_writer_open(tpath("nidx.bcf"), 0, h, NULL, 0, NULL, MD_VCF_IDX_TBI));
    assert_non_null(strstr(md_last_error(), "TBI"));
    assert_null(md_vcf_writer_open("-", 'z', h, NULL, 0, NULL, MD_VCF_IDX_CSI));
    assert_non_null(strstr(md_last_error(), "stdout"));
    assert_null(md_vcf_writer_open(tpath("nidx.vcf.gz"), 0, h, NULL, 0, NULL, 7));
    assert_int_equal(count_in_tmpdir("nidx"), 0);
    md_vcf_close(r);
    free(exp);
    free(all);
}

static void test_abort_and_tmp(void **state)
{
    (void)state;
    md_vcf_reader_t *r = md_vcf_open(FIX_VCF, NULL);
    md_vcf_writer_t *w = md_vcf_writer_open(tpath("ab.vcf.gz"), 0, md_vcf_header(r), NULL, 0, NULL,
                                            MD_VCF_IDX_CSI);
    assert_non_null(w);
    const char *tmp = md_vcf_writer_tmp_path(w);
    assert_non_null(tmp);
    assert_true(file_exists(tmp));
    assert_non_null(strstr(tmp, tpath("ab.vcf.gz"))); /* same directory */
    assert_false(file_exists(tpath("ab.vcf.gz")));
    char tcopy[600];
    snprintf(tcopy, sizeof tcopy, "%s", tmp);
    bcf1_t *b = bcf_init();
    for (int i = 0; i < 10; i++) {
        assert_int_equal(md_vcf_read(r, b), 0);
        assert_int_equal(md_vcf_write(w, b), 0);
    }
    assert_int_equal(count_in_tmpdir("ab.vcf.gz"), 2); /* data + index temporaries */
    md_vcf_writer_abort(w);
    assert_false(file_exists(tcopy));
    assert_false(file_exists(tpath("ab.vcf.gz")));
    assert_false(file_exists(tpath("ab.vcf.gz.csi")));
    assert_int_equal(count_in_tmpdir("ab.vcf.gz"), 0);
    md_vcf_writer_abort(NULL);

    /* an existing output is replaced only when the new one is complete */
    write_text(tpath("keep.vcf"), "old\n", 4);
    w = md_vcf_writer_open(tpath("keep.vcf"), 0, md_vcf_header(r), NULL, 0, NULL, 0);
    assert_int_equal(md_vcf_write(w, b), 0);
    md_vcf_writer_abort(w);
    FILE *f = fopen(tpath("keep.vcf"), "r");
    char buf[8] = {0};
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, sizeof buf, f), 4);
    fclose(f);
    assert_string_equal(buf, "old\n");

    /* a directory that does not exist */
    assert_null(md_vcf_writer_open(tpath("no/such/dir/x.vcf"), 0, md_vcf_header(r), NULL, 0, NULL, 0));
    assert_non_null(strstr(md_last_error(), "No such file or directory"));
    bcf_destroy(b);
    md_vcf_close(r);
}

/* Writes the whole fixture to stdout redirected to `target`; returns the first failure or 0. */
static int write_to_stdout(const char *target, char otype)
{
    md_vcf_reader_t *r = md_vcf_open(FIX_VCF, NULL);
    int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0644), saved = dup(1), ret = 0;
    assert_true(fd >= 0 && saved >= 0);
    fflush(stdout);
    assert_true(dup2(fd, 1) == 1);
    close(fd);
    md_vcf_writer_t *w = md_vcf_writer_open("-", otype, md_vcf_header(r), NULL, 0, NULL, 0);
    if (!w) ret = -10;
    assert_null(md_vcf_writer_tmp_path(w));
    bcf1_t *b = bcf_init();
    while (w && ret == 0 && md_vcf_read(r, b) == 0)
        if (md_vcf_write(w, b) < 0) ret = -3;
    if (w && ret == 0) ret = md_vcf_writer_close(w);
    else if (w) md_vcf_writer_abort(w);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    bcf_destroy(b);
    md_vcf_close(r);
    return ret;
}

static void test_stdout_and_full_disk(void **state)
{
    (void)state;
    assert_int_equal(write_to_stdout(tpath("stdout.vcf"), 0), 0);
    check_format(tpath("stdout.vcf"), vcf, no_compression);
    assert_int_equal(read_all(tpath("stdout.vcf"), NULL, NULL), FIX_N);
    assert_int_equal(write_to_stdout(tpath("stdout.bcf"), 'b'), 0);
    assert_int_equal(read_all(tpath("stdout.bcf"), NULL, NULL), FIX_N);
    if (!file_exists("/dev/full")) {
        skip();
        return;
    }
    /* every write to /dev/full fails with ENOSPC: it must surface, at a write or at close */
    assert_true(write_to_stdout("/dev/full", 'v') < -1);
#ifndef __SANITIZE_ADDRESS__
    /* htslib 1.16's bgzf_close returns early when its last flush fails and leaks the BGZF, which
     * LeakSanitizer would report; the error itself is caught either way */
    assert_true(write_to_stdout("/dev/full", 'z') < -1);
#endif
}

static void test_samples_roundtrip(void **state)
{
    (void)state;
    md_vcf_reader_t *r = md_vcf_open(FIX_3S, NULL);
    md_vcf_writer_t *w = md_vcf_writer_open(tpath("s.bcf"), 0, md_vcf_header(r), NULL, 0, NULL, 0);
    bcf1_t *b = bcf_init();
    while (md_vcf_read(r, b) == 0) assert_int_equal(md_vcf_write(w, b), 0);
    assert_int_equal(md_vcf_writer_close(w), 0);
    md_vcf_close(r);
    md_vcf_reader_t *x = md_vcf_open(FIX_3S, NULL), *y = md_vcf_open(tpath("s.bcf"), NULL);
    bcf1_t *c = bcf_init();
    int32_t *g1 = NULL, *g2 = NULL;
    int n1 = 0, n2 = 0, n = 0;
    while (md_vcf_read(x, b) == 0) {
        assert_int_equal(md_vcf_read(y, c), 0);
        assert_int_equal(bcf_get_genotypes(md_vcf_header(x), b, &g1, &n1), 6);
        assert_int_equal(bcf_get_genotypes(md_vcf_header(y), c, &g2, &n2), 6);
        assert_memory_equal(g1, g2, 6 * sizeof *g1);
        n++;
    }
    assert_int_equal(n, FIX_N);
    assert_int_equal(md_vcf_read(y, c), -1);
    free(g1);
    free(g2);
    bcf_destroy(b);
    bcf_destroy(c);
    md_vcf_close(x);
    md_vcf_close(y);
}

/* ---- contig names ------------------------------------------------------------------------- */

static bcf_hdr_t *hdr_with(const char *lines)
{
    bcf_hdr_t *h = bcf_hdr_init("w");
    assert_non_null(h);
    if (*lines) assert_int_equal(bcf_hdr_parse(h, (char *)lines), 0);
    assert_int_equal(bcf_hdr_sync(h), 0);
    return h;
}

static void test_contig_hint(void **state)
{
    (void)state;
    faidx_t *fai = load_fai();
    kstring_t msg = {0, 0, NULL};
    assert_int_equal(md_vcf_ref_has_contig(fai, "20", &msg), 1);
    assert_int_equal(md_vcf_ref_has_contig(fai, "chr20", &msg), 0);
    assert_string_equal(msg.s, "contig 'chr20' not in reference (reference has '20')");
    assert_int_equal(md_vcf_ref_has_contig(fai, "CHR20", &msg), 0);
    assert_string_equal(msg.s, "contig 'CHR20' not in reference (reference has '20')");
    assert_int_equal(md_vcf_ref_has_contig(fai, "chrX", &msg), 0);
    assert_string_equal(msg.s, "contig 'chrX' not in reference (reference has 1 contig: '20')");
    free(msg.s);
    msg = (kstring_t){0, 0, NULL};

    bcf_hdr_t *h = hdr_with("##fileformat=VCFv4.2\n##contig=<ID=chr20>\n"
                            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n");
    assert_true(md_vcf_check_contigs(h, fai, "in.vcf.gz") < -1);
    assert_string_equal(md_last_error(), "in.vcf.gz: contig 'chr20' not in reference (reference has '20')");
    bcf_hdr_destroy(h);
    h = hdr_with("##fileformat=VCFv4.2\n##contig=<ID=20>\n##contig=<ID=chrY>\n##contig=<ID=MT>\n"
                 "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n");
    assert_int_equal(md_vcf_check_contigs(h, fai, "in.vcf.gz"), 2);
    bcf_hdr_destroy(h);
    h = hdr_with("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n");
    assert_int_equal(md_vcf_check_contigs(h, fai, "in.vcf.gz"), 0);
    /* ##contig lines from the reference */
    assert_int_equal(md_vcf_add_ref_contigs(h, fai, "in.vcf.gz"), 1);
    assert_int_equal(bcf_hdr_name2id(h, "20"), 0);
    assert_int_equal(h->id[BCF_DT_CTG][0].val->info[0], FIX_LEN);
    assert_int_equal(md_vcf_add_ref_contigs(h, fai, "in.vcf.gz"), 0); /* idempotent */
    bcf_hdr_destroy(h);
    fai_destroy(fai);

    /* the lambda fixture: a GenBank-style name with '|' is a valid contig ID */
    fai = fai_load3("tests/data/real/lambda.fa.gz", NULL, NULL, 0);
    assert_non_null(fai);
    assert_int_equal(md_vcf_ref_has_contig(fai, "NC_001416.1", &msg), 0);
    assert_non_null(strstr(msg.s, "(reference has 1 contig: 'gi|9626243|ref|NC_001416.1|')"));
    free(msg.s);
    fai_destroy(fai);
}

static void test_command_line(void **state)
{
    (void)state;
    char *argv[] = {"score", "-r", "20:1-2", "weird\narg"};
    setenv("SOURCE_DATE_EPOCH", "86400", 1);
    char *s = md_vcf_command_line(4, argv);
    unsetenv("SOURCE_DATE_EPOCH");
    assert_string_equal(s, "##mamba-dnaCommand=score -r 20:1-2 weird arg; Date=Fri Jan  2 00:00:00 1970");
    free(s);
    s = md_vcf_command_line(0, NULL);
    assert_non_null(strstr(s, "##mamba-dnaCommand=; Date="));
    free(s);
}

/* ---- outside validation ------------------------------------------------------------------- */

static void test_bcftools_reads_output(void **state)
{
    (void)state;
    if (!have_tool("bcftools")) {
        skip();
        return;
    }
    write_scored(FIX_VCF, tpath("bt.vcf.gz"), 0, NULL, MD_VCF_IDX_CSI);
    char cmd[1200], buf[256] = {0};
    /* records, a region through our index, and our INFO values as bcftools prints them */
    snprintf(cmd, sizeof cmd,
             "bcftools view -H '%s' | wc -l && bcftools view -H -r 20:1000-2000 '%s' | wc -l && "
             "bcftools query -f '%%POS %%MAMBA_LLR\\n' -i 'POS==227' '%s' && "
             "bcftools view -h '%s' | grep -c '^##INFO=<ID=MAMBA_LLR,Number=A,Type=Float'",
             tpath("bt.vcf.gz"), tpath("bt.vcf.gz"), tpath("bt.vcf.gz"), tpath("bt.vcf.gz"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    assert_int_equal(pclose(p), 0);
    buf[n] = 0;
    /* POS 227: (226 % 1000) / 8 - 60 = -31.75 */
    assert_string_equal(buf, "803\n5\n227 -31.75\n1\n");
}

static void test_pysam_reads_output(void **state)
{
    (void)state;
    if (system("/usr/bin/python3 -c 'import pysam' >/dev/null 2>&1") != 0) {
        skip();
        return;
    }
    write_scored(FIX_VCF, tpath("py.bcf"), 0, NULL, MD_VCF_IDX_CSI);
    char cmd[1600], buf[256] = {0};
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '\n"
             "import pysam, sys\n"
             "f = pysam.VariantFile(sys.argv[1])\n"
             "n = 0; s = 0.0; miss = 0\n"
             "for r in f:\n"
             "    n += 1\n"
             "    v = r.info[\"MAMBA_LLR\"][0]\n"
             "    if v is None: miss += 1\n"
             "    else: s += v\n"
             "print(n, miss, \"%%.3f\" %% s, len(list(f.fetch(\"20\", 999, 2000))), f.header.info[\"MAMBA_LLR\"].number)\n"
             "' '%s'",
             tpath("py.bcf"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    assert_int_equal(pclose(p), 0);
    buf[n] = 0;
    /* the same sums computed here */
    md_vcf_reader_t *r = md_vcf_open(FIX_VCF, NULL);
    bcf1_t *b = bcf_init();
    double sum = 0;
    int miss = 0, cnt = 0;
    while (md_vcf_read(r, b) == 0) {
        cnt++;
        if (is_snv(b, 1)) sum += test_llr(b, 0);
        else miss++;
    }
    bcf_destroy(b);
    md_vcf_close(r);
    char exp[256];
    snprintf(exp, sizeof exp, "%d %d %.3f 5 A\n", cnt, miss, sum);
    assert_string_equal(buf, exp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_vcfgz),
        cmocka_unit_test(test_read_bcf_plain_stdin),
        cmocka_unit_test(test_read_samples),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_regions_need_index),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_otype_from_path),
        cmocka_unit_test(test_write_types),
        cmocka_unit_test(test_header_lines),
        cmocka_unit_test(test_extra_lines),
        cmocka_unit_test(test_write_index),
        cmocka_unit_test(test_abort_and_tmp),
        cmocka_unit_test(test_stdout_and_full_disk),
        cmocka_unit_test(test_samples_roundtrip),
        cmocka_unit_test(test_contig_hint),
        cmocka_unit_test(test_command_line),
        cmocka_unit_test(test_bcftools_reads_output),
        cmocka_unit_test(test_pysam_reads_output),
    };
    return cmocka_run_group_tests_name("vcfio", tests, group_setup, group_teardown);
}
