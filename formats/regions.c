/* regions.c: the contig dictionary (names in input order + a khash name -> index), close-name
 * suggestions for unknown contigs (chr prefix, case, M/MT, then edit distance <= 2), region
 * string parsing and BED reading (through htslib BGZF, so plain or gzip). All coordinates are
 * converted to 0-based half-open on the way in. */
#include "regions.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <htslib/bgzf.h>
#include <htslib/khash.h>
#include <htslib/kstring.h>

#include "md.h"

KHASH_MAP_INIT_STR(md_s2i, int)

struct md_contigs_s {
    int n, m;
    char **names;
    int64_t *lens;
    khash_t(md_s2i) *h;
};

md_contigs_t *md_contigs_init(void)
{
    md_contigs_t *c = md_calloc(1, sizeof *c);
    if (!c) return NULL;
    c->h = kh_init(md_s2i);
    if (!c->h) {
        md_error("out of memory");
        free(c);
        return NULL;
    }
    return c;
}

void md_contigs_destroy(md_contigs_t *c)
{
    if (!c) return;
    for (int i = 0; i < c->n; i++) free(c->names[i]);
    free(c->names);
    free(c->lens);
    kh_destroy(md_s2i, c->h);
    free(c);
}

int md_contigs_add(md_contigs_t *c, const char *name, int64_t len, const char *what)
{
    if (c->n == c->m) {
        int m = c->m ? 2 * c->m : 64;
        char **nn = md_realloc(c->names, (size_t)m * sizeof *nn);
        if (!nn) return -2;
        c->names = nn;
        int64_t *nl = md_realloc(c->lens, (size_t)m * sizeof *nl);
        if (!nl) return -2;
        c->lens = nl;
        c->m = m;
    }
    char *s = strdup(name);
    if (!s) {
        md_error("out of memory");
        return -2;
    }
    int absent;
    khint_t k = kh_put(md_s2i, c->h, s, &absent);
    if (absent < 0) {
        free(s);
        md_error("out of memory");
        return -2;
    }
    if (!absent) {
        free(s);
        md_error("%s: duplicate contig name '%s'", what ? what : "contigs", name);
        return -2;
    }
    kh_val(c->h, k) = c->n;
    c->names[c->n] = s;
    c->lens[c->n] = len;
    return c->n++;
}

int md_contigs_n(const md_contigs_t *c) { return c ? c->n : 0; }
const char *md_contigs_name(const md_contigs_t *c, int tid) { return c->names[tid]; }
int64_t md_contigs_len(const md_contigs_t *c, int tid) { return c->lens[tid]; }

int md_contigs_find(const md_contigs_t *c, const char *name)
{
    if (!c) return -1;
    khint_t k = kh_get(md_s2i, c->h, name);
    return k == kh_end(c->h) ? -1 : kh_val(c->h, k);
}

/* name without a leading "chr" (any case) */
static const char *strip_chr(const char *s)
{
    return strncasecmp(s, "chr", 3) == 0 ? s + 3 : s;
}

/* Equal apart from a "chr" prefix, case, or the mitochondrion spelled M / MT. */
static int same_contig_loosely(const char *a, const char *b)
{
    a = strip_chr(a);
    b = strip_chr(b);
    if (strcasecmp(a, b) == 0) return 1;
    int am = !strcasecmp(a, "M") || !strcasecmp(a, "MT");
    int bm = !strcasecmp(b, "M") || !strcasecmp(b, "MT");
    return am && bm;
}

/* Levenshtein distance, or max+1 when it is above max (names over 255 bytes are not compared). */
static int edit_distance(const char *a, const char *b, int max)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 255 || lb > 255) return max + 1;
    if (abs(la - lb) > max) return max + 1;
    int prev[256], cur[256];
    for (int j = 0; j <= lb; j++) prev[j] = j;
    for (int i = 1; i <= la; i++) {
        cur[0] = i;
        int best = cur[0];
        for (int j = 1; j <= lb; j++) {
            int d = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < d) d = prev[j] + 1;
            if (cur[j - 1] + 1 < d) d = cur[j - 1] + 1;
            cur[j] = d;
            if (d < best) best = d;
        }
        if (best > max) return max + 1;
        memcpy(prev, cur, (size_t)(lb + 1) * sizeof(int));
    }
    return prev[lb];
}

int md_contigs_suggest(const md_contigs_t *c, const char *name, char *buf, int bufsize, int max)
{
    if (bufsize > 0) buf[0] = 0;
    if (!c || bufsize <= 0 || max <= 0) return 0;
    int found = 0, used = 0;
    /* pass 0: loose equality; pass 1, 2: edit distance 1, 2 (2 only for names over 5 bytes:
     * "chr21" should not suggest "chrX") */
    int passes = strlen(name) > 5 ? 3 : 2;
    for (int pass = 0; pass < passes && found < max; pass++) {
        for (int i = 0; i < c->n && found < max; i++) {
            const char *s = c->names[i];
            int hit;
            if (pass == 0) hit = same_contig_loosely(name, s);
            else hit = !same_contig_loosely(name, s) && edit_distance(name, s, pass) == pass;
            if (!hit) continue;
            int w = snprintf(buf + used, (size_t)(bufsize - used), "%s'%s'", found ? ", " : "", s);
            if (w < 0 || w >= bufsize - used) {   /* no room: drop the partial name */
                buf[used] = 0;
                return found;
            }
            used += w;
            found++;
        }
    }
    return found;
}

void md_region_free(md_region_t *r)
{
    if (!r) return;
    free(r->contig);
    r->contig = NULL;
}

/* Parses a decimal position with optional thousands commas over [s, e); -1 when malformed. */
static int64_t parse_pos(const char *s, const char *e)
{
    int64_t v = 0;
    int digits = 0;
    if (s >= e) return -1;
    for (; s < e; s++) {
        if (*s == ',') continue;
        if (!isdigit((unsigned char)*s)) return -1;
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
        digits++;
    }
    return digits ? v : -1;
}

/* Range text after the colon: "beg", "beg-", "beg-end". beg/end 1-based inclusive; an open end is
 * INT64_MAX. 0 ok, -1 malformed. */
static int parse_range(const char *s, int64_t *beg, int64_t *end)
{
    const char *dash = strchr(s, '-');
    const char *e = s + strlen(s);
    if (!dash) {
        if ((*beg = parse_pos(s, e)) < 0) return -1;
        *end = INT64_MAX;
        return 0;
    }
    if ((*beg = parse_pos(s, dash)) < 0) return -1;
    if (dash[1] == 0) {
        *end = INT64_MAX;
        return 0;
    }
    if ((*end = parse_pos(dash + 1, e)) < 0) return -1;
    return 0;
}

static void unknown_contig(const md_contigs_t *c, const char *what, const char *region,
                           const char *name)
{
    char sug[512];
    if (md_contigs_suggest(c, name, sug, sizeof sug, 5) > 0)
        md_error("%s: region '%s': unknown contig '%s' (did you mean %s?)", what, region, name, sug);
    else if (c->n > 0)
        md_error("%s: region '%s': unknown contig '%s' (the %d contigs start with '%s')", what,
                 region, name, c->n, c->names[0]);
    else
        md_error("%s: region '%s': unknown contig '%s' (no contigs are known)", what, region, name);
}

/* Checks [beg, end) (0-based; end may be INT64_MAX for "to the end") of contig tid and fills r.
 * `label` is the region as the user wrote it. */
static int check_region(const md_contigs_t *c, int tid, const char *name, int64_t beg,
                        int64_t end, const char *what, const char *label, md_region_t *r)
{
    memset(r, 0, sizeof *r);
    r->tid = tid;
    if (end <= beg) {
        md_error("%s: region '%s' is empty (end before start)", what, label);
        return -2;
    }
    if (c) {
        int64_t len = c->lens[tid];
        if (beg >= len) {
            md_error("%s: region '%s' starts past the end of contig '%s' (length %" PRId64 ")",
                     what, label, name, len);
            return -2;
        }
        if (end > len) {
            if (end != INT64_MAX) {
                md_warn("%s: region '%s' ends past the end of contig '%s' (length %" PRId64
                        "); clamped to %s:%" PRId64 "-%" PRId64, what, label, name, len, name,
                        beg + 1, len);
                r->clamped = 1;
            }
            end = len;
        }
    }
    r->contig = strdup(name);
    if (!r->contig) {
        md_error("out of memory");
        return -2;
    }
    r->beg = beg;
    r->end = end;
    return 0;
}

int md_region_parse(const md_contigs_t *c, const char *s, const char *what, md_region_t *r)
{
    memset(r, 0, sizeof *r);
    r->tid = -1;
    if (!what) what = "region";
    if (!s || !*s) {
        md_error("%s: empty region string", what);
        return -2;
    }
    int tid = md_contigs_find(c, s);
    if (tid >= 0) return check_region(c, tid, s, 0, INT64_MAX, what, s, r);

    const char *colon = strrchr(s, ':');
    int64_t beg1 = 1, end1 = INT64_MAX;
    size_t nlen = strlen(s);
    if (colon) {
        if (parse_range(colon + 1, &beg1, &end1) < 0) {
            if (c) {   /* maybe a contig name with ':' that is not in the dictionary */
                unknown_contig(c, what, s, s);
                return -2;
            }
            md_error("%s: malformed region '%s' (expected chr, chr:beg-end or chr:beg-)", what, s);
            return -2;
        }
        nlen = (size_t)(colon - s);
    }
    if (nlen == 0) {
        md_error("%s: malformed region '%s' (no contig name)", what, s);
        return -2;
    }
    char *name = md_malloc(nlen + 1);
    if (!name) return -2;
    memcpy(name, s, nlen);
    name[nlen] = 0;
    int ret = -2;
    if (beg1 < 1) {
        md_error("%s: region '%s': start must be 1 or more (region strings are 1-based)", what, s);
        goto done;
    }
    if (end1 < beg1) {
        md_error("%s: region '%s' is empty (end before start)", what, s);
        goto done;
    }
    if (c) {
        tid = md_contigs_find(c, name);
        if (tid < 0) {
            unknown_contig(c, what, s, name);
            goto done;
        }
    }
    ret = check_region(c, tid, name, beg1 - 1, end1, what, s, r);
done:
    free(name);
    return ret;
}

void md_regions_init(md_regions_t *rs) { memset(rs, 0, sizeof *rs); }

void md_regions_destroy(md_regions_t *rs)
{
    if (!rs) return;
    for (int i = 0; i < rs->n; i++) md_region_free(&rs->a[i]);
    free(rs->a);
    memset(rs, 0, sizeof *rs);
}

static md_region_t *regions_push(md_regions_t *rs)
{
    if (rs->n == rs->m) {
        int m = rs->m ? 2 * rs->m : 16;
        md_region_t *a = md_realloc(rs->a, (size_t)m * sizeof *a);
        if (!a) return NULL;
        rs->a = a;
        rs->m = m;
    }
    return &rs->a[rs->n];
}

int md_regions_add_string(md_regions_t *rs, const md_contigs_t *c, const char *s, const char *what)
{
    md_region_t *r = regions_push(rs);
    if (!r) return -2;
    if (md_region_parse(c, s, what, r) < 0) return -2;
    rs->n++;
    return 0;
}

/* true when line starts with word followed by white space or the end */
static int starts_with_word(const char *line, const char *word)
{
    size_t n = strlen(word);
    return strncmp(line, word, n) == 0 && (line[n] == 0 || isspace((unsigned char)line[n]));
}

/* Parses a non-negative integer field; -1 when malformed. */
static int64_t parse_bed_int(const char *s)
{
    if (!*s) return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) return -1;
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

int md_bed_read(const char *path, const md_contigs_t *c, md_regions_t *out)
{
    BGZF *fp = bgzf_open(path, "r");
    if (!fp) {
        md_error("%s: cannot open BED file: %s", path, strerror(errno));
        return -2;
    }
    kstring_t line = {0, 0, NULL};
    int ret = -2, n_added = 0, r;
    int64_t lineno = 0;
    char what[1024];
    while ((r = bgzf_getline(fp, '\n', &line)) >= 0) {
        lineno++;
        snprintf(what, sizeof what, "%s:%" PRId64, path, lineno);
        while (line.l && (line.s[line.l - 1] == '\r' || line.s[line.l - 1] == ' ' ||
                          line.s[line.l - 1] == '\t'))
            line.s[--line.l] = 0;
        const char *p = line.s;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#' || starts_with_word(p, "track") || starts_with_word(p, "browser"))
            continue;
        /* split the first three columns (tab, or runs of spaces) */
        char *f[3];
        int nf = 0;
        char *q = (char *)p;
        while (nf < 3 && *q) {
            f[nf++] = q;
            while (*q && *q != '\t' && *q != ' ') q++;
            if (!*q) break;
            char sep = *q;
            *q++ = 0;
            if (sep == ' ')   /* a run of spaces is one separator; every tab is one */
                while (*q == ' ') q++;
        }
        if (nf < 3) {
            md_error("%s: malformed BED line: expected chrom, start and end, found %d column%s",
                     what, nf, nf == 1 ? "" : "s");
            goto fail;
        }
        int64_t beg = parse_bed_int(f[1]), end = parse_bed_int(f[2]);
        if (beg < 0 || end < 0) {
            md_error("%s: malformed BED line: start '%s' and end '%s' must be non-negative integers",
                     what, f[1], f[2]);
            goto fail;
        }
        char label[512];
        snprintf(label, sizeof label, "%s:%" PRId64 "-%" PRId64 " (BED %" PRId64 "-%" PRId64 ")",
                 f[0], beg + 1, end, beg, end);
        int tid = -1;
        if (c && (tid = md_contigs_find(c, f[0])) < 0) {
            unknown_contig(c, what, label, f[0]);
            goto fail;
        }
        md_region_t *reg = regions_push(out);
        if (!reg) goto fail;
        if (check_region(c, tid, f[0], beg, end, what, label, reg) < 0) goto fail;
        out->n++;
        n_added++;
    }
    if (r < -1) {
        md_error("%s: read error after line %" PRId64 " (truncated or corrupt file?)", path, lineno);
        goto fail;
    }
    ret = n_added;
fail:
    free(line.s);
    if (bgzf_close(fp) < 0 && ret >= 0) {
        md_error("%s: error closing BED file", path);
        ret = -2;
    }
    return ret;
}

char *md_region_format(const md_region_t *r, char *buf, int bufsize)
{
    snprintf(buf, (size_t)bufsize, "%s:%" PRId64 "-%" PRId64, r->contig, r->beg + 1, r->end);
    return buf;
}
