/* fuzz_common.h: helpers for the libFuzzer targets in tests/fuzz/ (header-only, static).
 * Path-based readers get the input as a file without touching the disk: fuzz_memfile() copies it
 * into a memfd, reachable as "/proc/self/fd/N". fuzz_scratch() gives a private directory (in
 * /dev/shm when present) for writers; it is removed at exit. FUZZ_CHECK aborts on a broken
 * invariant, which libFuzzer reports as a crash with the reproducer saved. Include it first (it
 * defines _GNU_SOURCE). */
#ifndef MD_FUZZ_COMMON_H
#define MD_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "md.h"

#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: invariant failed: %s (last error: %s)\n", __FILE__,       \
                    __LINE__, #cond, md_last_error());                                        \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* Copies data into a new memfd; path receives "/proc/self/fd/N". Returns the fd (close it when
 * done) or -1. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap)
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0) return -1;
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

static char fuzz_dir_[256];

static void fuzz_scratch_cleanup_(void)
{
    DIR *d = opendir(fuzz_dir_);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", fuzz_dir_, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(fuzz_dir_);
}

/* A private scratch directory for this process (created on first use), or NULL. */
static inline const char *fuzz_scratch(void)
{
    if (fuzz_dir_[0]) return fuzz_dir_;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(fuzz_dir_, sizeof fuzz_dir_, "%s/md-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_dir_)) {
        fuzz_dir_[0] = 0;
        return NULL;
    }
    atexit(fuzz_scratch_cleanup_);
    return fuzz_dir_;
}

/* Call from LLVMFuzzerInitialize: errors are expected by the thousand; keep stderr quiet (they
 * are still captured for md_last_error()). MD_FUZZ_VERBOSE=1 shows them. */
static inline void fuzz_init(void)
{
    const char *v = getenv("MD_FUZZ_VERBOSE");
    md_log_level = v && *v == '1' ? MD_LOG_DEBUG : MD_LOG_OFF;
}

#endif
