/* test_seqio.c: the sequence reader and regions. Text inputs are written to a temporary
 * directory by the tests (plain, gzip through zlib, BGZF through htslib); BAM/CRAM/indexed-FASTA
 * fixtures are in tests/data/seq/ (see its README). Error cases check the message text
 * (md_last_error). Tests on big real files under data/ skip when data/ is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>
#include <htslib/bgzf.h>
#include <htslib/hts.h>
#include <zlib.h>

#include "md.h"
#include "regions.h"
#include "seqio.h"

#define FIX "tests/data/seq/"

/* chr1 and chr2 of tests/data/seq/ref.fa (chr2:41-60 soft-masked) */
static const char *CHR1 =
    "GCTAAAGACAATTACATAACATACACGTCAGCACGAAACTTGTTGGCCCAGTGTGAATCGCTTAAGGGTTAAGTAAGTGTGATGCATAC"
    "GCCTTTACTTGCTGTGTCCACCCCATCGGAC";
static const char *CHR2 =
    "TGGCATTTTTATTACACTCAGAAACAGAACTCGGGTAATTttgacaggtcacgcagaggcGCGCCCTCCTGAAGTGCGTG";

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/md-test-seqio-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    md_log_level = MD_LOG_OFF;   /* errors are checked through md_last_error() */
    hts_set_log_level(HTS_LOG_OFF);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tpath(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* mode 0 plain, 1 gzip, 2 BGZF */
static const char *write_file(const char *name, const void *data, size_t n, int mode)
{
    const char *p = tpath(name);
    if (mode == 0) {
        FILE *f = fopen(p, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, n, f), n);
        assert_int_equal(fclose(f), 0);
    } else if (mode == 1) {
        gzFile g = gzopen(p, "wb");
        assert_non_null(g);
        assert_int_equal(gzwrite(g, data, (unsigned)n), (int)n);
        assert_int_equal(gzclose(g), Z_OK);
    } else {
        BGZF *b = bgzf_open(p, "w");
        assert_non_null(b);
        assert_int_equal(bgzf_write(b, data, n), (ssize_t)n);
        assert_int_equal(bgzf_close(b), 0);
    }
    return p;
}

static const char *write_str(const char *name, const char *s, int mode)
{
    return write_file(name, s, strlen(s), mode);
}

/* Reads every record as "name=SEQ;" (soft mask as lower case) into out; returns the final
 * return code of md_seqreader_read (-1 at a clean end), or -100 when open failed. */
static int slurp(const char *path, const md_seqopts_t *o, char *out, size_t outsz,
                 md_seqstats_t *st)
{
    out[0] = 0;
    md_seqreader_t *r = md_seqreader_open(path, o);
    if (!r) return -100;
    md_seq_t s;
    md_seq_init(&s);
    int ret;
    size_t l = 0;
    while ((ret = md_seqreader_read(r, &s)) >= 0) {
        l += (size_t)snprintf(out + l, outsz - l, "%s=", s.name);
        for (int64_t i = 0; i < s.len && l + 2 < outsz; i++) out[l++] = md_code_to_ascii(s.seq[i]);
        if (l + 1 < outsz) out[l++] = ';';
        out[l] = 0;
    }
    if (st) *st = *md_seqreader_stats(r);
    md_seq_destroy(&s);
    assert_int_equal(md_seqreader_close(r), 0);
    return ret;
}

static void assert_error_contains(const char *needle)
{
    if (!strstr(md_last_error(), needle))
        fail_msg("error message '%s' does not contain '%s'", md_last_error(), needle);
}

/* ---- FASTA / FASTQ ---------------------------------------------------------------------- */

static const char *FA =
    ">r1 some description\nACGTacgtNN\nRYkm\n\n>r2\nGGGG\n>r3\tx\nT\n";
static const char *FA_EXPECT = "r1=ACGTacgtNNNNnn;r2=GGGG;r3=T;";

static void test_fasta_plain_gzip_bgzf(void **state)
{
    (void)state;
    char out[4096];
    md_seqstats_t st;
    const char *names[] = {"a.fa", "a.fa.gz", "a.fa.bgz"};
    const char *fmts[] = {"FASTA", "FASTA (gzip)", "FASTA (BGZF)"};
    for (int mode = 0; mode < 3; mode++) {
        const char *p = write_str(names[mode], FA, mode);
        md_seqreader_t *r = md_seqreader_open(p, NULL);
        assert_non_null(r);
        assert_string_equal(md_seqreader_format(r), fmts[mode]);
        md_seqreader_close(r);
        assert_int_equal(slurp(p, NULL, out, sizeof out, &st), -1);
        assert_string_equal(out, FA_EXPECT);
        assert_int_equal(st.n_read, 3);
        assert_int_equal(st.n_emitted, 3);
        assert_int_equal(st.n_bases, 19);
    }
    /* BGZF with decompression threads gives the same records */
    md_seqopts_t o;
    md_seqopts_init(&o);
    o.threads = 2;
    assert_int_equal(slurp(tpath("a.fa.bgz"), &o, out, sizeof out, NULL), -1);
    assert_string_equal(out, FA_EXPECT);
}

static void test_fasta_crlf_and_index(void **state)
{
    (void)state;
    char out[1024];
    const char *p = write_str("crlf.fa", ">x y\r\nAC\r\nGT\r\n>z\r\nnn\r\n", 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -1);
    assert_string_equal(out, "x=ACGT;z=nn;");
    /* record fields */
    md_seqreader_t *r = md_seqreader_open(p, NULL);
    assert_non_null(r);
    md_seq_t s;
    md_seq_init(&s);
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_int_equal(s.kind, MD_SEQ_FASTA);
    assert_int_equal(s.index, 0);
    assert_null(s.contig);
    assert_int_equal(s.strand, '+');
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_int_equal(s.index, 1);
    assert_int_equal(s.seq[0], MD_BASE_N | MD_BASE_SOFTMASK);
    assert_int_equal(md_seqreader_read(r, &s), -1);
    assert_int_equal(md_seqreader_read(r, &s), -1);   /* stays at EOF */
    md_seq_destroy(&s);
    md_seqreader_close(r);
}

/* A 1.2 Mb record with 61-base lines and mixed case crosses many read-buffer boundaries. */
static void test_fasta_long_record(void **state)
{
    (void)state;
    const int64_t L = 1200007;
    char *seq = malloc((size_t)L + 1), *file = malloc((size_t)L * 2 + 64);
    assert_non_null(seq);
    assert_non_null(file);
    uint32_t x = 12345;
    for (int64_t i = 0; i < L; i++) {
        x = x * 1103515245u + 12345u;
        seq[i] = "ACGTNacgtn"[(x >> 16) % 10];
    }
    seq[L] = 0;
    size_t n = (size_t)sprintf(file, ">big\n");
    for (int64_t i = 0; i < L; i += 61) {
        int64_t k = L - i < 61 ? L - i : 61;
        memcpy(file + n, seq + i, (size_t)k);
        n += (size_t)k;
        file[n++] = '\n';
    }
    n += (size_t)sprintf(file + n, ">small\nAC\n");
    for (int mode = 0; mode < 3; mode += 2) {
        const char *p = write_file(mode ? "big.fa.gz" : "big.fa", file, n, mode);
        md_seqreader_t *r = md_seqreader_open(p, NULL);
        assert_non_null(r);
        md_seq_t s;
        md_seq_init(&s);
        assert_int_equal(md_seqreader_read(r, &s), 0);
        assert_string_equal(s.name, "big");
        assert_int_equal(s.len, L);
        for (int64_t i = 0; i < L; i++)
            if (md_code_to_ascii(s.seq[i]) != seq[i]) fail_msg("mismatch at %lld", (long long)i);
        assert_int_equal(md_seqreader_read(r, &s), 0);
        assert_string_equal(s.name, "small");
        assert_int_equal(s.len, 2);
        assert_int_equal(md_seqreader_read(r, &s), -1);
        md_seq_destroy(&s);
        md_seqreader_close(r);
    }
    free(seq);
    free(file);
}

/* Every byte value inside a long line (the 16-byte vector path) and a short one (scalar): bases
 * decode as md_base_code says, anything else is an error at the right position. */
static void test_fasta_all_bytes(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++) {
        if (b == '\n' || b == '\r' || b == ' ' || b == '\t') continue;   /* line structure */
        for (int longline = 0; longline < 2; longline++) {
            char text[128];
            const char *pre = longline ? "ACGTACGTACGTACGTACG" : "AC";
            int n = snprintf(text, sizeof text, ">r\n%s", pre);
            int pos = n - 3 + 1;   /* 1-based position of byte b in the record */
            text[n++] = (char)b;
            n += snprintf(text + n, sizeof text - (size_t)n, "%s\n",
                          longline ? "TTTTTTTTTTTTTTTTTTTTTTTTT" : "T");
            const char *p = write_file("byte.fa", text, (size_t)n, 0);
            md_seqreader_t *r = md_seqreader_open(p, NULL);
            assert_non_null(r);
            md_seq_t s;
            md_seq_init(&s);
            int ret = md_seqreader_read(r, &s);
            if (b == '>' && !longline) {
                /* ">r\nAC>T": '>' inside a line is not a record start */
                assert_true(ret < -1);
            } else if (md_base_code[b] == MD_BASE_INVALID) {
                if (ret >= 0) fail_msg("byte 0x%02x accepted", b);
                char exp[64];
                snprintf(exp, sizeof exp, "record 'r' position %d: invalid", pos);
                assert_error_contains(exp);
            } else {
                if (ret < 0) fail_msg("byte 0x%02x rejected: %s", b, md_last_error());
                assert_int_equal(s.seq[pos - 1], md_base_code[b]);
                assert_int_equal(s.seq[0], MD_BASE_A);
                assert_int_equal(s.seq[s.len - 1], MD_BASE_T);
            }
            md_seq_destroy(&s);
            md_seqreader_close(r);
        }
    }
}

static void test_fastq(void **state)
{
    (void)state;
    char out[1024];
    md_seqstats_t st;
    /* quality lines starting with '@' and '+', a '+name' separator, CRLF */
    const char *fq = "@q1 c\nACGT\n+\n@@@@\n@q2\nNNacg\n+q2\n+IIII\n@q3\r\nA\r\n+\r\n#\r\n";
    for (int mode = 0; mode < 3; mode++) {
        const char *p = write_str(mode == 0 ? "a.fq" : mode == 1 ? "a.fq.gz" : "a.fq.bgz", fq, mode);
        assert_int_equal(slurp(p, NULL, out, sizeof out, &st), -1);
        assert_string_equal(out, "q1=ACGT;q2=NNacg;q3=A;");
        assert_int_equal(st.n_read, 3);
    }
    md_seqopts_t o;
    md_seqopts_init(&o);
    o.min_len = 4;
    assert_int_equal(slurp(tpath("a.fq"), &o, out, sizeof out, &st), -1);
    assert_string_equal(out, "q1=ACGT;q2=NNacg;");
    assert_int_equal(st.n_skip_short, 1);
    assert_int_equal(st.n_emitted, 2);

    const char *p = write_str("trunc.fq", "@q1\nACGT\n+\nII", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("trunc.fq: record 'q1': quality is 2 bases shorter");
    p = write_str("noplus.fq", "@q1\nACGT\n", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("noplus.fq: record 'q1': no '+' line");
    p = write_str("longq.fq", "@q1\nACGT\n+\nIIIIII\n", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("longq.fq: record 'q1': quality is longer");
}

static void test_stdin(void **state)
{
    (void)state;
    char out[1024];
    const char *p = write_str("stdin.fa.gz", FA, 2);
    int saved = dup(0);
    assert_true(saved >= 0);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(dup2(fd, 0), 0);
    close(fd);
    int ret = slurp("-", NULL, out, sizeof out, NULL);
    assert_int_equal(dup2(saved, 0), 0);
    close(saved);
    assert_int_equal(ret, -1);
    assert_string_equal(out, FA_EXPECT);
}

static void test_fasta_errors(void **state)
{
    (void)state;
    char out[1024];
    const char *p = write_str("bad.fa", ">r1\nACGT\n>r2\nACGTAC\nJ\n", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_string_equal(out, "r1=ACGT;");   /* records before the bad one come through */
    char exp[600];
    snprintf(exp, sizeof exp, "%s: record 'r2' position 7: invalid base 'J'", p);
    assert_string_equal(md_last_error(), exp);
    p = write_str("bad.fa.gz", ">r1\nAC-T\n", 1);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("bad.fa.gz: record 'r1' position 3: invalid base '-'");
    p = write_str("bin.fa", ">r1\nAC\x01T\n", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("record 'r1' position 3: invalid byte 0x01");

    p = write_str("emptyrec.fa", ">r1\nAC\n>r2\n>r3\nGG\n", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("emptyrec.fa: record 'r2' has no sequence");
    p = write_str("emptylast.fa", ">r1\nAC\n>r2\n", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("record 'r2' has no sequence");
    p = write_str("noname.fa", ">\nAC\n", 0);
    assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);
    assert_error_contains("noname.fa: record 1 has no name");

    p = write_str("empty.fa", "", 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("empty.fa: empty file");
    p = write_str("empty.fa.gz", "", 1);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("empty.fa.gz: empty file");

    p = write_str("notseq.txt", "hello world\nthis is not a sequence file\n", 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("notseq.txt: not a FASTA, FASTQ, SAM, BAM or CRAM file");
    const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
    p = write_file("x.png", png, sizeof png, 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("x.png: not a FASTA, FASTQ, SAM, BAM or CRAM file");

    assert_int_equal(slurp(tpath("does-not-exist.fa"), NULL, out, sizeof out, NULL), -100);
    assert_error_contains("does-not-exist.fa: cannot open");
}

static void test_compression_errors(void **state)
{
    (void)state;
    char out[1024];
    /* xz magic (FD 37 7A 58 5A 00) is rejected before htslib sees it */
    const unsigned char xz[] = {0xfd, '7', 'z', 'X', 'Z', 0, 0, 4, 0xe6, 0xd6, 0xb4, 0x46};
    const char *p = write_file("a.fa.xz", xz, sizeof xz, 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    char exp[600];
    snprintf(exp, sizeof exp, "%s: xz-compressed input is not supported; recompress with bgzip", p);
    assert_string_equal(md_last_error(), exp);
    p = write_str("a.fa.bz2", "BZh91AY&SY", 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("bzip2-compressed input is not supported");
    const unsigned char zst[] = {0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x04, 0x21, 0, 0};
    p = write_file("a.fa.zst", zst, sizeof zst, 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("zstd-compressed input is not supported");
    /* a real xz file when the xz tool is there */
    if (system("command -v xz >/dev/null 2>&1") == 0) {
        write_str("real.fa", FA, 0);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "xz -c '%s' > '%s'", tpath("real.fa"), tpath("real.fa.xz"));
        assert_int_equal(system(cmd), 0);
        assert_int_equal(slurp(tpath("real.fa.xz"), NULL, out, sizeof out, NULL), -100);
        assert_error_contains("real.fa.xz: xz-compressed input is not supported");
    }

    /* truncated gzip and BGZF: the records before the damage, then an error */
    char big[20000];
    size_t n = 0;
    for (int i = 0; i < 200; i++) n += (size_t)sprintf(big + n, ">s%d\nACGTACGTACGTACGTACGTACGTACGTAC\n", i);
    for (int mode = 1; mode <= 2; mode++) {
        const char *full = write_file(mode == 1 ? "full.fa.gz" : "full.fa.bgz", big, n, mode);
        FILE *f = fopen(full, "rb");
        assert_non_null(f);
        unsigned char buf[20000];
        size_t m = fread(buf, 1, sizeof buf, f);
        fclose(f);
        p = write_file(mode == 1 ? "cut.fa.gz" : "cut.fa.bgz", buf, m / 2, 0);
        assert_true(slurp(p, NULL, out, sizeof out, NULL) < -1);   /* -100 for BGZF: no EOF */
        assert_error_contains(mode == 1 ? "truncated or corrupt gzip data" : "is truncated");
        assert_error_contains(mode == 1 ? "cut.fa.gz" : "cut.fa.bgz");
    }
}

/* ---- SAM / BAM / CRAM --------------------------------------------------------------------- */

/* r2 is chr1:31-50 on the reverse strand; restored to the read's orientation */
#define R1 "ATTACATAACATACACGTCA"
#define R2_FWD "GCACGAAACTTGTTGGCCCA"
#define R2_ORIG "TGGGCCAACAAGTTTCGTGC"
#define R8 "GAAAC"
#define R10_FWD "AAACAGAACTCGGGTAATTT"
#define R10_ORIG "AAATTACCCGAG"
#define R9 "ACGTNACGTTGCA"

static void test_bam_default(void **state)
{
    (void)state;
    char out[2048];
    md_seqstats_t st;
    md_seqopts_t o;
    md_seqopts_init(&o);
    o.reference = FIX "ref.fa";
    const char *files[] = {FIX "reads.sam", FIX "reads.bam", FIX "reads.cram"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(slurp(files[i], &o, out, sizeof out, &st), -1);
        assert_string_equal(out, "r1=" R1 ";r2=" R2_ORIG ";r8short=" R8 ";r10rev=" R10_ORIG
                                 ";r9unmapped=" R9 ";");
        assert_int_equal(st.n_read, 10);
        assert_int_equal(st.n_emitted, 5);
        assert_int_equal(st.n_skip_flag, 4);   /* secondary, supplementary, dup, qcfail */
        assert_int_equal(st.n_skip_noseq, 1);  /* SEQ '*' */
        assert_int_equal(st.n_skip_short, 0);
    }
    /* record fields */
    md_seqreader_t *r = md_seqreader_open(FIX "reads.bam", &o);
    assert_non_null(r);
    assert_string_equal(md_seqreader_format(r), "BAM");
    assert_int_equal(md_contigs_n(md_seqreader_contigs(r)), 2);
    md_seq_t s;
    md_seq_init(&s);
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_int_equal(s.kind, MD_SEQ_READ);
    assert_string_equal(s.contig, "chr1");
    assert_int_equal(s.beg, 10);
    assert_int_equal(s.end, 30);
    assert_int_equal(s.strand, '+');
    assert_int_equal(s.reversed, 0);
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_string_equal(s.name, "r2");
    assert_int_equal(s.flag, MD_FLAG_REVERSE);
    assert_int_equal(s.strand, '-');
    assert_int_equal(s.reversed, 1);
    assert_int_equal(s.beg, 30);
    for (int k = 0; k < 3; k++) assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_string_equal(s.name, "r9unmapped");
    assert_null(s.contig);
    assert_int_equal(s.tid, -1);
    assert_int_equal(s.beg, -1);
    assert_int_equal(s.flag, MD_FLAG_UNMAP);
    assert_int_equal(md_seqreader_read(r, &s), -1);
    md_seq_destroy(&s);
    md_seqreader_close(r);
}

static void test_bam_options(void **state)
{
    (void)state;
    char out[2048];
    md_seqstats_t st;
    md_seqopts_t o;
    md_seqopts_init(&o);
    o.restore_orientation = 0;
    assert_int_equal(slurp(FIX "reads.bam", &o, out, sizeof out, NULL), -1);
    assert_non_null(strstr(out, "r2=" R2_FWD ";"));

    md_seqopts_init(&o);
    o.flag_exclude = 0;   /* everything with a sequence */
    assert_int_equal(slurp(FIX "reads.bam", &o, out, sizeof out, &st), -1);
    assert_int_equal(st.n_emitted, 9);
    assert_int_equal(st.n_skip_noseq, 1);
    assert_non_null(strstr(out, "r3sec="));

    md_seqopts_init(&o);
    o.flag_require = MD_FLAG_REVERSE;   /* like samtools view -f 16 */
    assert_int_equal(slurp(FIX "reads.bam", &o, out, sizeof out, &st), -1);
    assert_string_equal(out, "r2=" R2_ORIG ";r10rev=" R10_ORIG ";");

    md_seqopts_init(&o);
    o.min_len = 6;
    o.threads = 1;
    assert_int_equal(slurp(FIX "reads.bam", &o, out, sizeof out, &st), -1);
    assert_null(strstr(out, "r8short"));
    assert_int_equal(st.n_skip_short, 1);

    md_seqopts_init(&o);
    o.flag_exclude = MD_FLAG_REVERSE;
    o.flag_require = MD_FLAG_REVERSE;
    assert_null(md_seqreader_open(FIX "reads.bam", &o));
    assert_error_contains("both required and excluded");
}

static void test_bam_no_sequence(void **state)
{
    (void)state;
    char out[256];
    md_seqstats_t st;
    const char *p = write_str("noseq.sam",
                              "@SQ\tSN:c\tLN:100\n"
                              "a\t0\tc\t1\t60\t10M\t*\t0\t0\t*\t*\n"
                              "b\t16\tc\t5\t60\t10M\t*\t0\t0\t*\t*\n", 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, &st), -1);
    assert_string_equal(out, "");
    assert_int_equal(st.n_read, 2);
    assert_int_equal(st.n_emitted, 0);
    assert_int_equal(st.n_skip_noseq, 2);   /* the caller can tell "no usable reads" */
}

static void test_bam_truncated(void **state)
{
    (void)state;
    char out[2048];
    FILE *f = fopen(FIX "reads.bam", "rb");
    assert_non_null(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    const char *p = write_file("cut.bam", buf, n - 60, 0);
    int ret = slurp(p, NULL, out, sizeof out, NULL);
    assert_true(ret < -1);
    assert_error_contains("cut.bam");
    /* cut exactly before the 28-byte BGZF end-of-file block: every block is whole */
    p = write_file("noeof.bam", buf, n - 28, 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("noeof.bam: the end-of-file marker is missing");
    const char *fa = write_str("noeof.fa.bgz", FA, 2);
    FILE *g = fopen(fa, "rb");
    n = fread(buf, 1, sizeof buf, g);
    fclose(g);
    p = write_file("noeof2.fa.bgz", buf, n - 28, 0);
    assert_int_equal(slurp(p, NULL, out, sizeof out, NULL), -100);
    assert_error_contains("noeof2.fa.bgz: the end-of-file marker is missing");
}

static void test_bam_regions(void **state)
{
    (void)state;
    char out[2048];
    md_seqopts_t o;
    md_seqopts_init(&o);
    o.reference = FIX "ref.fa";
    const char *regs[] = {"chr2:20-40", "chr1:1-15"};
    o.regions = regs;
    o.n_regions = 2;
    assert_int_equal(slurp(FIX "reads.bam", &o, out, sizeof out, NULL), -1);
    assert_string_equal(out, "r8short=" R8 ";r10rev=" R10_ORIG ";r1=" R1 ";");
    assert_int_equal(slurp(FIX "reads.cram", &o, out, sizeof out, NULL), -1);
    assert_string_equal(out, "r8short=" R8 ";r10rev=" R10_ORIG ";r1=" R1 ";");

    const char *bad[] = {"2:1-10"};
    o.regions = bad;
    o.n_regions = 1;
    assert_int_equal(slurp(FIX "reads.bam", &o, out, sizeof out, NULL), -100);
    assert_error_contains("reads.bam: region '2:1-10': unknown contig '2' (did you mean 'chr2'");

    /* no index next to a copy of the BAM */
    FILE *f = fopen(FIX "reads.bam", "rb");
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    const char *p = write_file("noidx.bam", buf, n, 0);
    o.regions = regs;
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("samtools index");
}

/* ---- regions ------------------------------------------------------------------------------- */

static md_contigs_t *test_contigs(void)
{
    md_contigs_t *c = md_contigs_init();
    assert_non_null(c);
    const char *names[] = {"chr1", "chr2", "chr20", "chrX", "MT", "HLA-A*01:01"};
    for (int i = 0; i < 6; i++) assert_int_equal(md_contigs_add(c, names[i], 1000 + i, "t"), i);
    assert_true(md_contigs_add(c, "chr1", 5, "dict") < -1);
    assert_error_contains("dict: duplicate contig name 'chr1'");
    return c;
}

static void test_region_strings(void **state)
{
    (void)state;
    md_region_t r;
    assert_int_equal(md_region_parse(NULL, "chr1:1,000-2,000", "x", &r), 0);
    assert_string_equal(r.contig, "chr1");
    assert_int_equal(r.beg, 999);
    assert_int_equal(r.end, 2000);
    md_region_free(&r);
    assert_int_equal(md_region_parse(NULL, "chr1:5-", "x", &r), 0);
    assert_int_equal(r.beg, 4);
    assert_int_equal(r.end, INT64_MAX);
    md_region_free(&r);
    assert_int_equal(md_region_parse(NULL, "chr1", "x", &r), 0);
    assert_int_equal(r.beg, 0);
    md_region_free(&r);
    assert_true(md_region_parse(NULL, "chr1:0-5", "opt", &r) < -1);
    assert_error_contains("opt: region 'chr1:0-5': start must be 1 or more");
    assert_true(md_region_parse(NULL, "chr1:10-5", "opt", &r) < -1);
    assert_error_contains("region 'chr1:10-5' is empty");
    assert_true(md_region_parse(NULL, "chr1:1x-5", "opt", &r) < -1);
    assert_error_contains("malformed region");
    assert_true(md_region_parse(NULL, ":1-5", "opt", &r) < -1);

    md_contigs_t *c = test_contigs();
    assert_int_equal(md_region_parse(c, "HLA-A*01:01", "x", &r), 0);   /* ':' in a name */
    assert_int_equal(r.tid, 5);
    assert_int_equal(r.end, 1005);
    md_region_free(&r);
    assert_int_equal(md_region_parse(c, "HLA-A*01:01:5-10", "x", &r), 0);
    assert_int_equal(r.beg, 4);
    assert_int_equal(r.end, 10);
    md_region_free(&r);
    assert_int_equal(md_region_parse(c, "chr2:900-2000", "x", &r), 0);   /* clamped */
    assert_int_equal(r.end, 1001);
    assert_int_equal(r.clamped, 1);
    char buf[64];
    assert_string_equal(md_region_format(&r, buf, sizeof buf), "chr2:900-1001");
    md_region_free(&r);
    assert_int_equal(md_region_parse(c, "chr2:1001", "x", &r), 0);   /* the last base */
    assert_int_equal(r.end - r.beg, 1);
    assert_int_equal(r.clamped, 0);
    md_region_free(&r);
    assert_true(md_region_parse(c, "chr2:1002-1003", "in.fa", &r) < -1);
    assert_error_contains("in.fa: region 'chr2:1002-1003' starts past the end of contig 'chr2'");
    assert_true(md_region_parse(c, "20:1-5", "in.fa", &r) < -1);
    assert_error_contains("in.fa: region '20:1-5': unknown contig '20' (did you mean 'chr20'");
    assert_true(md_region_parse(c, "chrM", "in.fa", &r) < -1);
    assert_error_contains("did you mean 'MT'");
    assert_true(md_region_parse(c, "CHRX:1-5", "in.fa", &r) < -1);
    assert_error_contains("did you mean 'chrX'");
    assert_true(md_region_parse(c, "zzzzzz", "in.fa", &r) < -1);
    assert_error_contains("unknown contig 'zzzzzz' (the 6 contigs start with 'chr1')");

    char sug[256];
    assert_int_equal(md_contigs_suggest(c, "chr21", sug, sizeof sug, 5), 3);
    assert_string_equal(sug, "'chr1', 'chr2', 'chr20'");
    assert_int_equal(md_contigs_suggest(c, "chr21", sug, sizeof sug, 1), 1);
    assert_string_equal(sug, "'chr1'");
    assert_int_equal(md_contigs_suggest(c, "1", sug, sizeof sug, 5), 1);
    assert_string_equal(sug, "'chr1'");
    md_contigs_destroy(c);
}

static void test_bed(void **state)
{
    (void)state;
    md_contigs_t *c = test_contigs();
    md_regions_t rs;
    md_regions_init(&rs);
    const char *p = write_str("a.bed",
                              "# comment\r\n"
                              "track name=x\n"
                              "browser position chr1:1-10\n"
                              "\n"
                              "chr1\t0\t10\tname\t0\t+\r\n"
                              "chrX 5 7\n"
                              "chr2\t990\t5000\n", 0);
    assert_int_equal(md_bed_read(p, c, &rs), 3);
    assert_int_equal(rs.n, 3);
    assert_string_equal(rs.a[0].contig, "chr1");
    assert_int_equal(rs.a[0].beg, 0);
    assert_int_equal(rs.a[0].end, 10);
    assert_string_equal(rs.a[1].contig, "chrX");
    assert_int_equal(rs.a[1].beg, 5);
    assert_int_equal(rs.a[1].end, 7);
    assert_int_equal(rs.a[2].end, 1001);   /* clamped at the contig end */
    assert_int_equal(rs.a[2].clamped, 1);
    /* gzip BED, and no dictionary */
    p = write_str("b.bed.gz", "chrQ\t1\t2\n", 1);
    assert_int_equal(md_bed_read(p, NULL, &rs), 1);
    assert_int_equal(rs.n, 4);
    md_regions_destroy(&rs);

    struct { const char *text, *msg; } bad[] = {
        {"chr1\t0\t10\nchr1\t5\n", "bad.bed:2: malformed BED line: expected chrom, start and end"},
        {"chr1\tx\t10\n", "bad.bed:1: malformed BED line: start 'x'"},
        {"chr1\t-1\t10\n", "bad.bed:1: malformed BED line"},
        {"chr1\t5\t5\n", "bad.bed:1: region 'chr1:6-5 (BED 5-5)' is empty"},
        {"#x\nchr1\t9\t3\n", "bad.bed:2: region"},
        {"chr9\t0\t10\n", "bad.bed:1: region 'chr9:1-10 (BED 0-10)': unknown contig 'chr9'"},
        {"chr1\t2000\t2010\n", "bad.bed:1: region 'chr1:2001-2010 (BED 2000-2010)' starts past"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        md_regions_init(&rs);
        p = write_str("bad.bed", bad[i].text, 0);
        assert_true(md_bed_read(p, c, &rs) < -1);
        assert_error_contains(bad[i].msg);
        md_regions_destroy(&rs);
    }
    md_regions_init(&rs);
    assert_true(md_bed_read(tpath("missing.bed"), c, &rs) < -1);
    assert_error_contains("missing.bed: cannot open BED file");
    md_regions_destroy(&rs);
    md_contigs_destroy(c);
}

/* ---- indexed FASTA ------------------------------------------------------------------------ */

static void test_fasta_regions(void **state)
{
    (void)state;
    char out[2048], exp[2048];
    md_seqstats_t st;
    md_seqopts_t o;
    md_seqopts_init(&o);
    const char *regs[] = {"chr1:1-10", "chr2:41-45", "chr2:70-100", "chr2", "chr1:115-"};
    o.regions = regs;
    o.n_regions = 5;
    snprintf(exp, sizeof exp, "chr1:1-10=%.10s;chr2:41-45=%.5s;chr2:70-80=%s;chr2:1-80=%s;"
             "chr1:115-120=%s;", CHR1, CHR2 + 40, CHR2 + 69, CHR2, CHR1 + 114);
    const char *files[] = {FIX "ref.fa", FIX "ref.fa.gz"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(slurp(files[i], &o, out, sizeof out, &st), -1);
        assert_string_equal(out, exp);
        assert_int_equal(st.n_clamped, 1);
        assert_int_equal(st.n_emitted, 5);
    }
    /* BED after region strings; record fields */
    const char *bed = write_str("r.bed", "browser x\nchr2\t0\t3\r\nchr1\t119\t120\n", 0);
    o.regions = regs;
    o.n_regions = 1;
    o.bed = bed;
    md_seqreader_t *r = md_seqreader_open(FIX "ref.fa.gz", &o);
    assert_non_null(r);
    md_seq_t s;
    md_seq_init(&s);
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_string_equal(s.name, "chr1:1-10");
    assert_int_equal(s.kind, MD_SEQ_REGION);
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_string_equal(s.name, "chr2:1-3");
    assert_string_equal(s.contig, "chr2");
    assert_int_equal(s.tid, 1);
    assert_int_equal(s.beg, 0);
    assert_int_equal(s.end, 3);
    assert_int_equal(s.len, 3);
    assert_int_equal(s.index, 1);
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_string_equal(s.name, "chr1:120-120");
    assert_int_equal(md_code_to_ascii(s.seq[0]), CHR1[119]);
    assert_int_equal(md_seqreader_read(r, &s), -1);
    md_seq_destroy(&s);
    md_seqreader_close(r);
    o.bed = NULL;

    /* errors */
    const char *e1[] = {"chr2:81-90"};
    o.regions = e1;
    assert_int_equal(slurp(FIX "ref.fa", &o, out, sizeof out, NULL), -100);
    assert_error_contains("ref.fa: region 'chr2:81-90' starts past the end of contig 'chr2' (length 80)");
    const char *e2[] = {"chr2:10-5"};
    o.regions = e2;
    assert_int_equal(slurp(FIX "ref.fa", &o, out, sizeof out, NULL), -100);
    assert_error_contains("region 'chr2:10-5' is empty");
    const char *e3[] = {"1:1-5"};
    o.regions = e3;
    assert_int_equal(slurp(FIX "ref.fa", &o, out, sizeof out, NULL), -100);
    assert_error_contains("ref.fa: region '1:1-5': unknown contig '1' (did you mean 'chr1'");
}

static void test_fasta_index_errors(void **state)
{
    (void)state;
    char out[1024];
    md_seqopts_t o;
    md_seqopts_init(&o);
    const char *regs[] = {"a"};
    o.regions = regs;
    o.n_regions = 1;
    /* no .fai: never created, the error says how to make one */
    const char *p = write_str("noidx.fa", ">a\nACGT\n", 0);
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("noidx.fa: no FASTA index");
    assert_error_contains("samtools faidx");
    assert_int_equal(access(tpath("noidx.fa.fai"), F_OK), -1);
    /* an explicit index path */
    write_str("elsewhere.fai", "a\t4\t3\t4\t5\n", 0);
    o.fai = tpath("elsewhere.fai");
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -1);
    assert_string_equal(out, "a:1-4=ACGT;");
    o.fai = NULL;
    /* plain gzip cannot be indexed */
    p = write_str("plain.fa.gz", ">a\nACGT\n", 1);
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("plain gzip cannot be read by region; recompress with bgzip");
    /* FASTQ has no regions */
    p = write_str("r.fq", "@a\nAC\n+\nII\n", 0);
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("not FASTQ");
    /* duplicate names: a record hidden by samtools faidx (it keeps the first 'a') */
    p = write_str("dup.fa", ">a\nACGT\n>b\nGGGG\n>a\nTTTT\n>c\nCCCC\n", 0);
    write_str("dup.fa.fai", "a\t4\t3\t4\t5\nb\t4\t11\t4\t5\nc\t4\t27\t4\t5\n", 0);
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("dup.fa: duplicate sequence name 'a'");
    p = write_str("dup2.fa", ">a\nACGT\n>b\nGGGG\n>a\nTT\n", 0);
    write_str("dup2.fa.fai", "a\t4\t3\t4\t5\nb\t4\t11\t4\t5\n", 0);
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("dup2.fa: duplicate sequence name 'a'");
    /* ... and an index that lists a name twice */
    p = write_str("dup3.fa", ">a\nACGT\n>a\nGGGG\n", 0);
    write_str("dup3.fa.fai", "a\t4\t3\t4\t5\na\t4\t11\t4\t5\n", 0);
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("duplicate contig name 'a'");
    /* long header comments are not mistaken for hidden records */
    p = write_str("desc.fa", ">a some long description here\nACGT\n>b x\nGG\n", 0);
    write_str("desc.fa.fai", "a\t4\t30\t4\t5\nb\t2\t40\t2\t3\n", 0);
    const char *rb[] = {"b", "a:2-3"};
    o.regions = rb;
    o.n_regions = 2;
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -1);
    assert_string_equal(out, "b:1-2=GG;a:2-3=CG;");
    /* an invalid byte inside a region */
    p = write_str("badreg.fa", ">a\nACJT\n", 0);
    write_str("badreg.fa.fai", "a\t4\t3\t4\t5\n", 0);
    const char *ra[] = {"a:2-4"};
    o.regions = ra;
    o.n_regions = 1;
    assert_true(slurp(p, &o, out, sizeof out, NULL) < -1);
    assert_error_contains("badreg.fa: region 'a:2-4' position 2 (a:3): invalid base 'J'");
}

static void test_fasta_handles(void **state)
{
    (void)state;
    md_fasta_t *f = md_fasta_open(FIX "ref.fa.gz", NULL);
    assert_non_null(f);
    md_fasta_t *g = md_fasta_dup(f);
    assert_non_null(g);
    const md_contigs_t *c = md_fasta_contigs(g);
    assert_int_equal(md_contigs_n(c), 2);
    assert_int_equal(md_contigs_len(c, 0), 120);
    assert_int_equal(md_contigs_len(c, 1), 80);
    md_region_t r;
    assert_int_equal(md_region_parse(c, "chr2:38-43", "t", &r), 0);
    md_seq_t a, b;
    md_seq_init(&a);
    md_seq_init(&b);
    assert_int_equal(md_fasta_fetch(f, &r, &a), 0);
    md_fasta_close(f);   /* the duplicate handle is independent */
    assert_int_equal(md_fasta_fetch(g, &r, &b), 0);
    assert_int_equal(a.len, 6);
    assert_memory_equal(a.seq, b.seq, 6);
    char s[7];
    for (int i = 0; i < 6; i++) s[i] = md_code_to_ascii(b.seq[i]);
    s[6] = 0;
    assert_string_equal(s, "ATTttg");   /* soft mask kept */
    md_region_free(&r);
    md_seq_destroy(&a);
    md_seq_destroy(&b);
    md_fasta_close(g);
}

/* ---- real data (tests/fetch-data.sh) ------------------------------------------------------ */

static void test_real_chr20(void **state)
{
    (void)state;
    const char *p = "data/hg37/20.fa.gz";   /* vt-examples 20.fa.gz, GRCh37 chr20 */
    if (access(p, R_OK) != 0 || access("data/hg37/20.fa.gz.fai", R_OK) != 0 ||
        access("data/hg37/20.fa.gz.gzi", R_OK) != 0) {
        skip();
        return;
    }
    /* streamed whole: one record of 63,025,520 bases (data-and-interfaces §1.1) */
    md_seqopts_t so;
    md_seqopts_init(&so);
    so.threads = 1;
    md_seqreader_t *r = md_seqreader_open(p, &so);
    assert_non_null(r);
    md_seq_t s;
    md_seq_init(&s);
    assert_int_equal(md_seqreader_read(r, &s), 0);
    assert_string_equal(s.name, "20");
    assert_int_equal(s.len, 63025520);
    int64_t n_n = 0;
    for (int64_t i = 0; i < s.len; i++) n_n += (s.seq[i] & MD_BASE_MASK) == MD_BASE_N;
    assert_true(n_n > 3400000 && n_n < 3600000);   /* 3.52 Mb of N */
    assert_int_equal(md_seqreader_read(r, &s), -1);
    md_seq_destroy(&s);
    md_seqreader_close(r);

    char out[256];
    md_seqopts_t o;
    md_seqopts_init(&o);
    const char *regs[] = {"20:1000226-1000235"};
    o.regions = regs;
    o.n_regions = 1;
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -1);
    assert_string_equal(out, "20:1000226-1000235=ACCACCCACA;");   /* data-and-interfaces §2 */
    const char *bad[] = {"chr20:1-10"};
    o.regions = bad;
    assert_int_equal(slurp(p, &o, out, sizeof out, NULL), -100);
    assert_error_contains("did you mean '20'");
}

/* the pinfish SIRV BAM: as many reads and bases as samtools reports with the same filters */
static void test_real_bam(void **state)
{
    (void)state;
    const char *p = "data/reads/sirv.bam";
    if (access(p, R_OK) != 0 || system("command -v samtools >/dev/null 2>&1") != 0) {
        skip();
        return;
    }
    char cmd[512], line[128];
    snprintf(cmd, sizeof cmd, "samtools view -c -F 0xF04 %s && samtools fasta -F 0xF04 %s 2>/dev/null"
             " | grep -v '^>' | tr -d '\\n' | wc -c", p, p);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    long long n_reads = -1, n_bases = -1;
    if (fgets(line, sizeof line, f)) n_reads = atoll(line);
    if (fgets(line, sizeof line, f)) n_bases = atoll(line);
    int pst = pclose(f);
    if (pst != 0 || n_reads <= 0 || n_bases <= 0)
        fail_msg("'%s' failed (status %d, reads %lld, bases %lld)", cmd, pst, n_reads, n_bases);
    md_seqopts_t o;
    md_seqopts_init(&o);
    o.threads = 1;
    md_seqreader_t *r = md_seqreader_open(p, &o);
    assert_non_null(r);
    md_seq_t s;
    md_seq_init(&s);
    int ret;
    while ((ret = md_seqreader_read(r, &s)) >= 0) {}
    assert_int_equal(ret, -1);
    const md_seqstats_t *st = md_seqreader_stats(r);
    assert_int_equal(st->n_emitted + st->n_skip_noseq, n_reads);
    assert_int_equal(st->n_bases, n_bases);
    assert_true(st->n_emitted > 80000);
    md_seq_destroy(&s);
    md_seqreader_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fasta_plain_gzip_bgzf),
        cmocka_unit_test(test_fasta_crlf_and_index),
        cmocka_unit_test(test_fasta_long_record),
        cmocka_unit_test(test_fasta_all_bytes),
        cmocka_unit_test(test_fastq),
        cmocka_unit_test(test_stdin),
        cmocka_unit_test(test_fasta_errors),
        cmocka_unit_test(test_compression_errors),
        cmocka_unit_test(test_bam_default),
        cmocka_unit_test(test_bam_options),
        cmocka_unit_test(test_bam_no_sequence),
        cmocka_unit_test(test_bam_truncated),
        cmocka_unit_test(test_bam_regions),
        cmocka_unit_test(test_region_strings),
        cmocka_unit_test(test_bed),
        cmocka_unit_test(test_fasta_regions),
        cmocka_unit_test(test_fasta_index_errors),
        cmocka_unit_test(test_fasta_handles),
        cmocka_unit_test(test_real_chr20),
        cmocka_unit_test(test_real_bam),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
