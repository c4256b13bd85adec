/* window.h: fixed-length windows over a sequence of length L (width W, stride S).
 * Rule: windows start at 0, S, 2S, ... while start + W < L; then one final window that ends
 * exactly at L (start = max(0, L - W)). Every base is covered, every window has length W unless
 * L < W (then one window [0, L)), and the last two windows may overlap by more than W - S.
 * W = 0 means the whole record as one window. S > W (gaps) and S <= 0 are rejected. */
#ifndef MD_WINDOW_H
#define MD_WINDOW_H

#include <stdint.h>

typedef struct {
    int64_t start, len;   /* [start, start + len) of the sequence */
} md_window_t;

/* Checks W >= 0, and 0 < S <= W when W > 0 (S is ignored when W == 0). 0 or < -1 (logged). */
int md_window_check(int64_t W, int64_t S);
/* Number of windows over L bases (0 when L == 0), or < -1 for invalid W/S (logged). */
int64_t md_window_count(int64_t L, int64_t W, int64_t S);
/* Window i (0 <= i < md_window_count) without materializing the list. */
md_window_t md_window_at(int64_t L, int64_t W, int64_t S, int64_t i);
/* All windows into *out (malloc'ed, free() it; NULL when there are none). Returns the count, or
 * < -1 (logged). */
int64_t md_windows(int64_t L, int64_t W, int64_t S, md_window_t **out);

/* Iterator form: md_winiter_init checks W/S (0 or < -1); md_winiter_next gives 0 and a window, or
 * -1 after the last. */
typedef struct {
    int64_t L, W, S, i, n;
} md_winiter_t;
int md_winiter_init(md_winiter_t *it, int64_t L, int64_t W, int64_t S);
int md_winiter_next(md_winiter_t *it, md_window_t *w);

/* Position in the sequence of token k of window w, read on the forward strand (rc = 0) or as the
 * reverse complement of the window (rc = 1, token 0 is the last base of the window). With the
 * record's index this traces every token to (sequence, position, strand). */
static inline int64_t md_window_pos(const md_window_t *w, int64_t k, int rc)
{
    return rc ? w->start + w->len - 1 - k : w->start + k;
}

#endif
