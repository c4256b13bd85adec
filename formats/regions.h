/* regions.h: genomic regions from region strings ("chr", "chr:beg-end", "chr:beg-", 1-based
 * inclusive, commas allowed in numbers) and BED files (0-based half-open), checked against a
 * contig dictionary (names + lengths from a .fai or a SAM header). Internally every region is
 * 0-based half-open [beg, end). Unknown contigs are errors that suggest close names. */
#ifndef MD_REGIONS_H
#define MD_REGIONS_H

#include <stdint.h>

typedef struct md_contigs_s md_contigs_t;   /* opaque name -> (index, length) dictionary */

typedef struct {
    char *contig;        /* owned */
    int tid;             /* index in the contig dictionary, -1 when resolved without one */
    int64_t beg, end;    /* 0-based half-open; end is clamped to the contig length */
    int clamped;         /* 1 when the requested end was past the contig end */
} md_region_t;

typedef struct {
    int n, m;
    md_region_t *a;
} md_regions_t;

/* Contig dictionary. md_contigs_add returns the new index, or < -1 (out of memory); adding a
 * name twice is an error (< -1, logged as "<what>: duplicate contig name 'x'"). */
md_contigs_t *md_contigs_init(void);
void md_contigs_destroy(md_contigs_t *c);
int md_contigs_add(md_contigs_t *c, const char *name, int64_t len, const char *what);
int md_contigs_n(const md_contigs_t *c);
const char *md_contigs_name(const md_contigs_t *c, int tid);
int64_t md_contigs_len(const md_contigs_t *c, int tid);
/* Index of name, or -1. */
int md_contigs_find(const md_contigs_t *c, const char *name);
/* Writes up to `max` close names of an unknown contig into buf as "'20', 'chr2'" (names that
 * equal it after adding or removing "chr" or ignoring case come first, then names within edit
 * distance 2). Returns the number written. */
int md_contigs_suggest(const md_contigs_t *c, const char *name, char *buf, int bufsize, int max);

/* Parses a region string against c (contig names may contain ':'; the whole string is tried as a
 * name first). Checks: unknown contig (error with suggestions), beg < 1, end < beg (empty
 * region), beg past the contig end: errors (< -1) naming `what` and the region. An end past the
 * contig end is clamped with a warning. With c == NULL only the syntax is checked (tid = -1,
 * an open end is INT64_MAX). Free r->contig with md_region_free or md_regions_destroy. */
int md_region_parse(const md_contigs_t *c, const char *s, const char *what, md_region_t *r);
void md_region_free(md_region_t *r);

/* Appends the regions of a BED file (tab or space separated chrom, start, end; more columns
 * ignored; "#", "track" and "browser" lines and blank lines skipped; CRLF tolerated; plain or
 * gzip). A malformed line is an error "<file>:<line>: ...". Checks against c as md_region_parse
 * does (c may be NULL). Returns the number of regions appended, or < -1. */
int md_bed_read(const char *path, const md_contigs_t *c, md_regions_t *out);
/* Appends one region string (md_region_parse). 0 or < -1. */
int md_regions_add_string(md_regions_t *rs, const md_contigs_t *c, const char *s, const char *what);
void md_regions_init(md_regions_t *rs);
void md_regions_destroy(md_regions_t *rs);

/* "chr:beg-end" (1-based inclusive) of a region into buf; returns buf. */
char *md_region_format(const md_region_t *r, char *buf, int bufsize);

#endif
