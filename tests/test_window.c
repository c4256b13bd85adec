/* test_window.c: window placement (window.h rule) on edge cases: L < W, L == W, L % S != 0,
 * overlap, W = 0, S > W and S <= 0 rejected, L = 0; checks full coverage and that the iterator,
 * md_window_at and md_windows agree; token -> position tracing on both strands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "md.h"
#include "window.h"

static void expect_windows(int64_t L, int64_t W, int64_t S, const int64_t *starts,
                           const int64_t *lens, int64_t n)
{
    md_window_t *w = NULL;
    assert_int_equal(md_windows(L, W, S, &w), n);
    for (int64_t i = 0; i < n; i++) {
        assert_int_equal(w[i].start, starts[i]);
        assert_int_equal(w[i].len, lens[i]);
    }
    free(w);
}

static void test_examples(void **state)
{
    (void)state;
    /* L < W: one short window */
    expect_windows(5, 8, 4, (int64_t[]){0}, (int64_t[]){5}, 1);
    /* L == W */
    expect_windows(8, 8, 4, (int64_t[]){0}, (int64_t[]){8}, 1);
    /* L % S != 0: last window ends at L and overlaps the previous one */
    expect_windows(10, 4, 4, (int64_t[]){0, 4, 6}, (int64_t[]){4, 4, 4}, 3);
    /* exact tiling: no duplicate final window */
    expect_windows(8, 4, 4, (int64_t[]){0, 4}, (int64_t[]){4, 4}, 2);
    /* overlapping stride */
    expect_windows(10, 4, 2, (int64_t[]){0, 2, 4, 6}, (int64_t[]){4, 4, 4, 4}, 4);
    expect_windows(11, 4, 3, (int64_t[]){0, 3, 6, 7}, (int64_t[]){4, 4, 4, 4}, 4);
    /* W = 0: whole record */
    expect_windows(12345, 0, 0, (int64_t[]){0}, (int64_t[]){12345}, 1);
    /* L = 0: nothing */
    md_window_t *w = (md_window_t *)1;
    assert_int_equal(md_windows(0, 4, 2, &w), 0);
    assert_null(w);
    /* L = 1 */
    expect_windows(1, 4, 2, (int64_t[]){0}, (int64_t[]){1}, 1);
}

static void test_rejected(void **state)
{
    (void)state;
    int lvl = md_log_level;
    md_log_level = MD_LOG_OFF;
    md_window_t *w = NULL;
    assert_true(md_windows(100, 4, 5, &w) < -1);   /* S > W would leave gaps */
    assert_null(w);
    assert_true(md_windows(100, 4, 0, &w) < -1);
    assert_true(md_windows(100, 4, -1, &w) < -1);
    assert_true(md_windows(100, -4, 1, &w) < -1);
    assert_true(md_window_count(-1, 4, 4) < -1);
    md_winiter_t it;
    assert_true(md_winiter_init(&it, 100, 4, 5) < -1);
    md_log_level = lvl;
    assert_int_equal(md_window_check(0, 999), 0);   /* S is ignored when W = 0 */
}

/* every base covered, every window inside [0, L), lengths W (or L), starts non-decreasing and
 * the consecutive gap at most S; the three APIs agree */
static void test_properties(void **state)
{
    (void)state;
    for (int64_t L = 0; L <= 70; L++)
        for (int64_t W = 0; W <= 12; W++)
            for (int64_t S = W ? 1 : 0; S <= (W ? W : 0); S++) {
                md_window_t *w = NULL;
                int64_t n = md_windows(L, W, S, &w);
                assert_int_equal(n, md_window_count(L, W, S));
                char covered[80] = {0};
                md_winiter_t it;
                md_window_t x;
                assert_int_equal(md_winiter_init(&it, L, W, S), 0);
                for (int64_t i = 0; i < n; i++) {
                    assert_int_equal(md_winiter_next(&it, &x), 0);
                    assert_int_equal(x.start, w[i].start);
                    assert_int_equal(x.len, w[i].len);
                    assert_true(w[i].start >= 0 && w[i].start + w[i].len <= L);
                    assert_int_equal(w[i].len, (W == 0 || L < W) ? L : W);
                    if (i > 0) {
                        assert_true(w[i].start > w[i - 1].start);
                        assert_true(w[i].start - w[i - 1].start <= (W ? S : 0));
                    }
                    for (int64_t k = 0; k < w[i].len; k++) covered[w[i].start + k] = 1;
                }
                assert_int_equal(md_winiter_next(&it, &x), -1);
                for (int64_t k = 0; k < L; k++) assert_true(covered[k]);
                if (n > 0) assert_int_equal(w[n - 1].start + w[n - 1].len, L);
                free(w);
            }
}

static void test_trace(void **state)
{
    (void)state;
    md_window_t w = md_window_at(10, 4, 4, 2);   /* last window [6, 10) */
    assert_int_equal(w.start, 6);
    assert_int_equal(md_window_pos(&w, 0, 0), 6);
    assert_int_equal(md_window_pos(&w, 3, 0), 9);
    assert_int_equal(md_window_pos(&w, 0, 1), 9);   /* RC token 0 is the last base */
    assert_int_equal(md_window_pos(&w, 3, 1), 6);
    /* a chromosome-sized count without materializing */
    int64_t L = 248956422, W = 131072, S = 65536;
    int64_t n = md_window_count(L, W, S);
    md_window_t last = md_window_at(L, W, S, n - 1), prev = md_window_at(L, W, S, n - 2);
    assert_int_equal(last.start + last.len, L);
    assert_true(prev.start + W < L);
    assert_true(last.start - prev.start <= S);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_trace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
