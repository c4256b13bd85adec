/* fuzz_bed.c: libFuzzer target for BED reading and region strings: the input is read as a BED
 * file against a small contig dictionary and without one, and each line is parsed as a region
 * string. Every region that comes back must lie inside its contig. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <htslib/hts.h>

#include "md.h"
#include "regions.h"

static char path[64];
static md_contigs_t *contigs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    md_log_level = MD_LOG_OFF;
    hts_set_log_level(HTS_LOG_OFF);
    snprintf(path, sizeof path, "/tmp/fuzz-bed-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    contigs = md_contigs_init();
    const char *names[] = {"chr1", "chr2", "20", "chrX", "HLA-A*01:01", "MT"};
    for (int i = 0; i < 6; i++)
        if (md_contigs_add(contigs, names[i], 1000 * (i + 1), "fuzz") < 0) abort();
    return 0;
}

static void check(const md_regions_t *rs, const md_contigs_t *c)
{
    for (int i = 0; i < rs->n; i++) {
        const md_region_t *r = &rs->a[i];
        if (r->beg < 0 || r->end <= r->beg) abort();
        if (c && (r->tid < 0 || r->end > md_contigs_len(c, r->tid))) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    for (int k = 0; k < 2; k++) {
        const md_contigs_t *c = k ? contigs : NULL;
        md_regions_t rs;
        md_regions_init(&rs);
        md_bed_read(path, c, &rs);
        check(&rs, c);
        md_regions_destroy(&rs);
        /* each line as a region string */
        char *text = malloc(size + 1);
        if (!text) abort();
        memcpy(text, data, size);
        text[size] = 0;
        md_regions_init(&rs);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
            md_regions_add_string(&rs, c, line, "fuzz");
        check(&rs, c);
        md_regions_destroy(&rs);
        free(text);
    }
    char sug[64];
    char name[32] = {0};
    memcpy(name, data, size < 31 ? size : 31);
    md_contigs_suggest(contigs, name, sug, sizeof sug, 3);
    return 0;
}
