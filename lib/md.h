/* md.h: things every part of mamba-dna shares: the version, logging, return-code conventions,
 * timing and peak-memory helpers, and checked allocation that never exits.
 *
 * Return codes follow htslib: >= 0 success (or a record), -1 end of input / not found,
 * < -1 error (already logged with the function name). The library never calls exit(). */
#ifndef MD_H
#define MD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MD_VERSION "0.1.0"

enum { MD_LOG_OFF = 0, MD_LOG_ERROR = 1, MD_LOG_WARNING = 2, MD_LOG_INFO = 3, MD_LOG_DEBUG = 4 };

/* The one piece of global mutable state: the log level (default MD_LOG_WARNING). */
extern int md_log_level;

void md_log(int level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "[E::func] message" on stderr, like htslib's hts_log_error. */
#define md_error(...) md_log(MD_LOG_ERROR, __func__, __VA_ARGS__)
#define md_warn(...)  md_log(MD_LOG_WARNING, __func__, __VA_ARGS__)
#define md_info(...)  md_log(MD_LOG_INFO, __func__, __VA_ARGS__)
#define md_debug(...) md_log(MD_LOG_DEBUG, __func__, __VA_ARGS__)

/* The last error message logged (without the "[E::func] " prefix); tools print it when they
 * need to wrap it. Thread-local; empty when nothing failed. */
const char *md_last_error(void);

/* Wall-clock seconds since an arbitrary origin, CPU seconds of this process, peak RSS in KiB. */
double md_realtime(void);
double md_cputime(void);
long   md_peak_rss_kb(void);

/* malloc/calloc/realloc that log "out of memory" with the caller's name and return NULL. */
void *md_malloc_(const char *func, size_t n);
void *md_calloc_(const char *func, size_t n, size_t size);
void *md_realloc_(const char *func, void *p, size_t n);
#define md_malloc(n)     md_malloc_(__func__, (n))
#define md_calloc(n, s)  md_calloc_(__func__, (n), (s))
#define md_realloc(p, n) md_realloc_(__func__, (p), (n))

/* SHA-256 of a file as 64 lowercase hex digits + NUL. 0 / < -1 (logged). */
int md_sha256_file(const char *path, char hex[65]);

/* Overflow-checked size arithmetic: returns 0 and sets *out, or -1 on overflow. */
static inline int md_mul_size(size_t a, size_t b, size_t *out)
{
    if (b && a > SIZE_MAX / b) return -1;
    *out = a * b;
    return 0;
}

/* Opens a temporary output name for writing ("wb") without following a link planted there: a
 * file of that name (left by a killed run with the same pid) is removed, then the name is
 * created with O_EXCL. NULL with errno set on failure. */
FILE *md_create_exclusive(const char *tmp);

#endif
