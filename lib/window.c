/* window.c: window placement over a sequence (the rule is in window.h). Windows are a pure
 * function of (L, W, S, i), so any split of the work over threads gives the same windows in
 * the same order. */
#include "window.h"

#include <inttypes.h>
#include <stdlib.h>

#include "md.h"

int md_window_check(int64_t W, int64_t S)
{
    if (W < 0) {
        md_error("window length %" PRId64 " is negative", W);
        return -2;
    }
    if (W == 0) return 0;
    if (S <= 0) {
        md_error("window stride %" PRId64 " must be positive", S);
        return -2;
    }
    if (S > W) {
        md_error("window stride %" PRId64 " is larger than the window length %" PRId64
                 " (bases between windows would be skipped)", S, W);
        return -2;
    }
    return 0;
}

int64_t md_window_count(int64_t L, int64_t W, int64_t S)
{
    if (md_window_check(W, S) < 0) return -2;
    if (L < 0) {
        md_error("sequence length %" PRId64 " is negative", L);
        return -2;
    }
    if (L == 0) return 0;
    if (W == 0 || L <= W) return 1;
    /* starts i*S with i*S + W < L: i < (L - W) / S, i.e. ceil((L - W) / S) of them, + the last */
    return (L - W + S - 1) / S + 1;
}

md_window_t md_window_at(int64_t L, int64_t W, int64_t S, int64_t i)
{
    md_window_t w;
    if (W == 0 || L <= W) {
        w.start = 0;
        w.len = L;
        return w;
    }
    int64_t n = (L - W + S - 1) / S + 1;
    w.start = i < n - 1 ? i * S : L - W;
    w.len = W;
    return w;
}

int64_t md_windows(int64_t L, int64_t W, int64_t S, md_window_t **out)
{
    *out = NULL;
    int64_t n = md_window_count(L, W, S);
    if (n <= 0) return n;
    size_t bytes;
    if (md_mul_size((size_t)n, sizeof(md_window_t), &bytes) < 0) {
        md_error("%" PRId64 " windows do not fit in memory", n);
        return -2;
    }
    md_window_t *w = md_malloc(bytes);
    if (!w) return -2;
    for (int64_t i = 0; i < n; i++) w[i] = md_window_at(L, W, S, i);
    *out = w;
    return n;
}

int md_winiter_init(md_winiter_t *it, int64_t L, int64_t W, int64_t S)
{
    int64_t n = md_window_count(L, W, S);
    if (n < 0) return -2;
    it->L = L;
    it->W = W;
    it->S = S;
    it->i = 0;
    it->n = n;
    return 0;
}

int md_winiter_next(md_winiter_t *it, md_window_t *w)
{
    if (it->i >= it->n) return -1;
    *w = md_window_at(it->L, it->W, it->S, it->i++);
    return 0;
}
