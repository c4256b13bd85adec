/* log.c: logging, last-error capture, clocks and peak memory (see md.h). */
#include "md.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int md_log_level = MD_LOG_WARNING;

static __thread char last_error[1024];

void md_log(int level, const char *func, const char *fmt, ...)
{
    va_list ap;
    if (level == MD_LOG_ERROR) {
        va_start(ap, fmt);
        vsnprintf(last_error, sizeof last_error, fmt, ap);
        va_end(ap);
    }
    if (level > md_log_level) return;
    static const char tag[] = "?EWID";
    fprintf(stderr, "[%c::%s] ", tag[level >= 0 && level <= 4 ? level : 0], func);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

const char *md_last_error(void) { return last_error; }

double md_realtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double md_cputime(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + 1e-6 * (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

long md_peak_rss_kb(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_maxrss; /* KiB on Linux */
}

void *md_malloc_(const char *func, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) md_log(MD_LOG_ERROR, func, "out of memory allocating %zu bytes", n);
    return p;
}

void *md_calloc_(const char *func, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) md_log(MD_LOG_ERROR, func, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *md_realloc_(const char *func, void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) md_log(MD_LOG_ERROR, func, "out of memory allocating %zu bytes", n);
    return q;
}

FILE *md_create_exclusive(const char *tmp)
{
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return NULL;
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
    }
    return fp;
}
