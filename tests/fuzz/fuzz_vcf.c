/* fuzz_vcf.c: libFuzzer target for formats/vcfio: opens the input as VCF/VCF.gz/BCF, reads every
 * record, and copies them with an added Number=A INFO score through the writer (output type from the
 * input size: v, z, b, u). When the copy closes cleanly it must read back with the same number of
 * records; when it fails, neither the output nor a temporary file may remain. Seeds:
 * tests/fuzz/corpus/fuzz_vcf/. */
#include "fuzz_common.h"

#include <htslib/hts.h>
#include <htslib/vcf.h>

#include "vcfio.h"

#define MAX_RECORDS 5000

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    if (!getenv("MD_FUZZ_VERBOSE")) hts_set_log_level(HTS_LOG_OFF);
    return 0;
}

static long count_records(const char *path)
{
    md_vcf_reader_t *r = md_vcf_open(path, NULL);
    if (!r) return -1;
    bcf1_t *b = bcf_init();
    long n = 0;
    int ret;
    while ((ret = md_vcf_read(r, b)) == 0) n++;
    bcf_destroy(b);
    md_vcf_close(r);
    return ret == -1 ? n : -1;
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[64], out[512];
    int fd = fuzz_memfile(data, size, in, sizeof in);
    if (fd < 0) return 0;
    md_vcf_reader_t *r = md_vcf_open(in, NULL);
    if (!r) {
        close(fd);
        return 0;
    }
    static const char types[] = "vzbu";
    const char *dir = fuzz_scratch();
    FUZZ_CHECK(dir != NULL);
    snprintf(out, sizeof out, "%s/out.%c", dir, types[size % 4]);
    const char *extra[] = {"##INFO=<ID=FUZZ_LLR,Number=A,Type=Float,Description=\"fuzz\">"};
    md_vcf_writer_t *w = md_vcf_writer_open(out, types[size % 4], md_vcf_header(r), extra, 1, NULL, 0);

    bcf1_t *b = bcf_init();
    float v[64];
    long n = 0;
    int ret;
    while (n < MAX_RECORDS && (ret = md_vcf_read(r, b)) == 0) {
        FUZZ_CHECK(b->n_allele >= 0 && b->rid >= 0);
        n++;
        if (!w) continue;
        int na = b->n_allele - 1;
        if (na > 0 && na <= 64) {
            for (int i = 0; i < na; i++) v[i] = (float)(b->pos % 97) - (float)i;
            (void)bcf_update_info_float(md_vcf_writer_header(w), b, "FUZZ_LLR", v, na);
        }
        if (md_vcf_write(w, b) < 0) {
            md_vcf_writer_abort(w);
            w = NULL;
        }
    }
    bcf_destroy(b);
    int read_ok = n == MAX_RECORDS || ret == -1;
    md_vcf_close(r);
    if (w) {
        if (md_vcf_writer_close(w) == 0) {
            if (read_ok) FUZZ_CHECK(count_records(out) == n);
            FUZZ_CHECK(unlink(out) == 0);
        } else {
            FUZZ_CHECK(access(out, F_OK) != 0); /* a failed output never appears */
        }
    }
    FUZZ_CHECK(dir_entries(dir) == 0);        /* and no temporary file is left behind */
    close(fd);
    return 0;
}
