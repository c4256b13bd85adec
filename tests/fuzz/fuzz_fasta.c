/* fuzz_fasta.c: libFuzzer target for the FASTA/FASTQ side of the sequence reader (format
 * sniffing, compression checks, the streaming parser) plus tokenizing and windowing of every
 * record it returns. The input is written to a temporary file, as a user's file would be. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <htslib/hts.h>

#include "md.h"
#include "seqio.h"
#include "tokenizer.h"
#include "window.h"

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    md_log_level = MD_LOG_OFF;
    hts_set_log_level(HTS_LOG_OFF);
    setenv("REF_PATH", "/nonexistent/%s", 1);   /* never fetch CRAM references */
    snprintf(path, sizeof path, "/tmp/fuzz-fasta-XXXXXX");
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
    o.min_len = size & 1;   /* exercise min_len 0 and 1 */
    md_seqreader_t *r = md_seqreader_open(path, &o);
    if (!r) return 0;
    const md_vocab_t *v = md_vocab_get(size & 2 ? "caduceus" : "plantcaduceus");
    int map[16];
    md_vocab_complement(v, map, v->padded_size);
    md_seq_t s;
    md_seq_init(&s);
    int32_t *ids = NULL;
    while (md_seqreader_read(r, &s) >= 0) {
        int32_t *n = realloc(ids, (size_t)(s.len ? s.len : 1) * sizeof *ids);
        if (!n) abort();
        ids = n;
        md_tokenize(v, s.seq, s.len, ids);
        md_revcomp_ids(ids, ids, s.len, map, v->padded_size);
        for (int64_t i = 0; i < s.len; i++)
            if (ids[i] < 0 || ids[i] >= v->size) abort();
        md_winiter_t it;
        md_window_t w;
        if (md_winiter_init(&it, s.len, 7, 3) < 0) abort();
        int64_t covered = 0;
        while (md_winiter_next(&it, &w) == 0) {
            if (w.start < 0 || w.start + w.len > s.len) abort();
            covered = w.start + w.len;
        }
        if (covered != s.len) abort();
    }
    free(ids);
    md_seq_destroy(&s);
    md_seqreader_close(r);
    return 0;
}
