/* fuzz_bam.c: libFuzzer target for the SAM/BAM/CRAM side of the sequence reader: header and
 * record parsing through htslib, flag filters, 4-bit decoding and orientation restore, with
 * default options and with every flag filter off. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <htslib/hts.h>

#include "md.h"
#include "seqio.h"

static char path[64];

/* htslib's CRAM reader allocates what a container header claims (GBs from a few mutated bytes);
 * let such allocations fail (htslib then reports an error) instead of counting as an OOM. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=2048";
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    md_log_level = MD_LOG_OFF;
    hts_set_log_level(HTS_LOG_OFF);
    setenv("REF_PATH", "/nonexistent/%s", 1);   /* never fetch CRAM references */
    setenv("REF_CACHE", "/nonexistent/%s", 1);
    snprintf(path, sizeof path, "/tmp/fuzz-bam-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    md_seqopts_t o;
    md_seqopts_init(&o);
    if (size & 1) {
        o.flag_exclude = 0;
        o.restore_orientation = 0;
        o.min_len = 0;
    }
    md_seqreader_t *r = md_seqreader_open(path, &o);
    if (!r) return 0;
    md_seq_t s;
    md_seq_init(&s);
    int64_t n = 0;
    while (md_seqreader_read(r, &s) >= 0) {
        uint8_t max = s.kind == MD_SEQ_READ ? MD_BASE_N : (MD_BASE_N | MD_BASE_SOFTMASK);
        for (int64_t i = 0; i < s.len; i++)   /* reads carry no soft mask */
            if (s.seq[i] > max || (s.seq[i] & MD_BASE_MASK) > MD_BASE_N) abort();
        if (s.index != n++) abort();
    }
    const md_seqstats_t *st = md_seqreader_stats(r);
    if (st->n_emitted + st->n_skip_flag + st->n_skip_short + st->n_skip_noseq > st->n_read) abort();
    md_seq_destroy(&s);
    md_seqreader_close(r);
    return 0;
}
