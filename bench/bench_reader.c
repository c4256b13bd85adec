/* bench_reader.c: reader throughput. Streams a FASTA/FASTQ/SAM/BAM/CRAM file through
 * md_seqreader, cuts every record into windows (W, S) and tokenizes each window (Caduceus
 * vocabulary) into a reused buffer, then prints one line: bases, records, windows, wall/CPU
 * seconds, MB/s (10^6 bases per second) and minor page faults. bench/readers.sh compares it with
 * bgzip -dc and samtools fasta on the same files. -n reads without tokenizing (to see the split).
 * Usage: bench_reader [-n] [-t threads] [-w W] [-s S] file */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "md.h"
#include "seqio.h"
#include "tokenizer.h"
#include "window.h"

int main(int argc, char **argv)
{
    md_seqopts_t o;
    md_seqopts_init(&o);
    int64_t W = 1024, S = 1024;
    int c, no_tok = 0;
    while ((c = getopt(argc, argv, "nt:w:s:")) >= 0) {
        switch (c) {
        case 'n': no_tok = 1; break;
        case 't': o.threads = atoi(optarg); break;
        case 'w': W = atoll(optarg); break;
        case 's': S = atoll(optarg); break;
        default: goto usage;
        }
    }
    if (optind + 1 != argc) goto usage;
    if (md_window_check(W, S) < 0) return 1;

    const md_vocab_t *v = md_vocab_get("caduceus");
    double t0 = md_realtime(), c0 = md_cputime();
    md_seqreader_t *r = md_seqreader_open(argv[optind], &o);
    if (!r) return 1;
    md_seq_t s;
    md_seq_init(&s);
    int32_t *ids = NULL;
    int64_t m_ids = 0, n_win = 0, n_tok = 0;
    uint64_t check = 0;
    int ret;
    while ((ret = md_seqreader_read(r, &s)) >= 0) {
        if (no_tok) continue;
        md_winiter_t it;
        md_window_t w;
        if (md_winiter_init(&it, s.len, W, S) < 0) return 1;
        while (md_winiter_next(&it, &w) == 0) {
            if (w.len > m_ids) {
                m_ids = w.len;
                free(ids);
                if (!(ids = md_malloc((size_t)m_ids * sizeof *ids))) return 1;
            }
            md_tokenize(v, s.seq + w.start, w.len, ids);
            check += (uint64_t)ids[0] + (uint64_t)ids[w.len - 1];
            n_win++;
            n_tok += w.len;
        }
    }
    const md_seqstats_t *st = md_seqreader_stats(r);
    double wall = md_realtime() - t0, cpu = md_cputime() - c0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s\tformat=%s\tthreads=%d\tbases=%" PRId64 "\trecords=%" PRId64 "\twindows=%" PRId64
           "\ttokens=%" PRId64 "\twall=%.3f\tcpu=%.3f\tMB/s=%.1f\tminflt=%ld\tcheck=%" PRIu64 "\n",
           argv[optind], md_seqreader_format(r), o.threads, st->n_bases, st->n_emitted, n_win,
           n_tok, wall, cpu, st->n_bases / wall / 1e6, ru.ru_minflt, check);
    free(ids);
    md_seq_destroy(&s);
    int cl = md_seqreader_close(r);
    return ret < -1 || cl < 0;
usage:
    fprintf(stderr, "usage: bench_reader [-t threads] [-w window] [-s stride] file\n");
    return 1;
}
