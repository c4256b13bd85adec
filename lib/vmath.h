/* vmath.h: float math that vectorises, shared by the CPU forward (backend_cpu.c) and backward
 * (train_ops_cpu.c) ops: exp to ~1 ulp by a degree-7 polynomial, log by an atanh series,
 * softplus as the reference kernel computes it, SiLU; scalar forms and 8-lane AVX2 + FMA forms
 * (compiled when __AVX2__ is defined). */
#ifndef MD_VMATH_H
#define MD_VMATH_H

#include <stdint.h>

/* exp(x) to ~1 ulp for x in [-87, 88] (clamped outside): x = k ln2 + r, |r| <= ln2/2,
 * degree-7 Taylor polynomial (truncation < 6e-9 relative), 2^k from the exponent bits. */
static inline float md_expf(float x)
{
    const float xin = x;
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    x = x == x ? x : 0.0f; /* NaN: evaluated at 0 (no undefined int conversion), returned as NaN */
    /* round to nearest by the 1.5*2^23 trick (vectorises; |x*log2e| < 2^22 here) */
    float kf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - kf * 0.693145751953125f;
    r = r - kf * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)kf + 127) << 23;
    return xin == xin ? p * u.f : xin;
}

/* log(x) for x > 0 normal: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s),
 * s = (m-1)/(m+1), odd series to s^9 (|s| < 0.172: truncation < 1e-9). */
static inline float md_logf(float x)
{
    union { int32_t i; float f; } u = { .f = x };
    int32_t e = ((u.i >> 23) & 0xff) - 127;
    u.i = (u.i & 0x007fffff) | 0x3f800000; /* m in [1, 2) */
    float m = u.f;
    if (m > 1.41421356f) { m *= 0.5f; e += 1; }
    float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
    float p = 2.0f / 9.0f;
    p = p * s2 + 2.0f / 7.0f;
    p = p * s2 + 2.0f / 5.0f;
    p = p * s2 + 2.0f / 3.0f;
    p = p * s2 + 2.0f;
    return p * s + (float)e * 0.693147180559945309f;
}

/* softplus as in the reference kernel: v > 20 ? v : log1p(exp(v)). log1p(e) is computed as
 * log(u) * e / (u - 1) with u = 1 + e, which cancels the rounding of u (Goldberg's trick). */
static inline float md_softplus(float v)
{
    float e = md_expf(v);
    float u = 1.0f + e;
    float d = u - 1.0f;
    float l = d == 0.0f ? e : md_logf(u) * (e / (d == 0.0f ? 1.0f : d));
    return v > 20.0f ? v : l;
}

static inline float md_silu(float v) { return v / (1.0f + md_expf(-v)); }

#ifdef __AVX2__
/* The same functions on 8 lanes (AVX2 + FMA), used by the scan's inner loops. */
#include <immintrin.h>
typedef __m256 v8f;
static inline v8f v8_exp(v8f x)
{
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
    v8f kf = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v8f r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(1.428606765330187045e-06f), r);
    v8f p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kf), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
static inline v8f v8_log(v8f x)
{
    __m256i i = _mm256_castps_si256(x);
    __m256i e = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(i, 23), _mm256_set1_epi32(0xff)),
                                 _mm256_set1_epi32(127));
    v8f m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)),
                                                _mm256_set1_epi32(0x3f800000)));
    v8f big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    v8f ef = _mm256_add_ps(_mm256_cvtepi32_ps(e), _mm256_and_ps(big, _mm256_set1_ps(1.0f)));
    v8f one = _mm256_set1_ps(1.0f);
    v8f sv = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one)), s2 = _mm256_mul_ps(sv, sv);
    v8f p = _mm256_set1_ps(2.0f / 9.0f);
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(2.0f / 7.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(2.0f / 5.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(2.0f / 3.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(2.0f));
    return _mm256_fmadd_ps(p, sv, _mm256_mul_ps(ef, _mm256_set1_ps(0.693147180559945309f)));
}
static inline v8f v8_softplus(v8f v)
{
    v8f e = v8_exp(v), one = _mm256_set1_ps(1.0f);
    v8f u = _mm256_add_ps(one, e), d = _mm256_sub_ps(u, one);
    v8f dz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ);
    v8f l = _mm256_mul_ps(v8_log(u), _mm256_div_ps(e, _mm256_blendv_ps(d, one, dz)));
    l = _mm256_blendv_ps(l, e, dz);
    return _mm256_blendv_ps(l, v, _mm256_cmp_ps(v, _mm256_set1_ps(20.0f), _CMP_GT_OQ));
}
static inline v8f v8_silu(v8f v)
{
    v8f one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(v, _mm256_add_ps(one, v8_exp(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}
#endif

#endif
