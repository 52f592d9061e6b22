/* Portable vector types for the engine's elementwise kernels (GCC/Clang vector extensions).
 *
 * vf has sixteen float lanes: one AVX-512 register, two AVX2 or four SSE registers, whichever clone of the
 * calling kernel runs (core/simd.h). The helpers are static inline so that they are compiled inside each
 * clone with that clone's instructions. Only the kernels' own .c files include this header.
 */
#ifndef CLAD_CORE_VEC_H
#define CLAD_CORE_VEC_H

#include <stdint.h>
#include <string.h>

#define VL 16
typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));

static inline vf vf_dup(float a) { return a - (vf){0}; }
/* a in every lane, as one broadcast instruction. vf_dup keeps a zero's sign, but GCC 12 builds it lane by
 * lane in the AVX-512 clone when a is not a constant; vf_splat turns -0 into +0 and is for runtime values
 * in hot loops where that cannot matter. */
static inline vf vf_splat(float a) { return (vf){0} + a; }
/* Lane-wise m ? a : b for a comparison mask m (all ones or all zeros per lane). */
static inline vf vf_select(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf vf_load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vf_store(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vi vf_lane_index(void) { return (vi){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; }

/* The sum of the lanes, halving pairwise in a fixed order. */
static inline float vf_sum(vf v)
{
    float l[VL];
    vf_store(l, v);
    for (int w = VL / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) l[i] += l[i + w];
    return l[0];
}

/* The largest of x[0..n-1], n >= 1 (a NaN is skipped unless it comes first, like a scalar `>` scan). */
static inline float vf_row_max(const float *x, int n)
{
    float mx = x[0];
    int i = 0;
    if (n >= VL) {
        vf m = vf_load(x);
        for (i = VL; i + VL <= n; i += VL) {
            vf v = vf_load(x + i);
            m = vf_select(v > m, v, m);
        }
        float l[VL];
        vf_store(l, m);
        for (int k = 0; k < VL; k++) mx = l[k] > mx ? l[k] : mx;
    }
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* y[0..n-1] += b[0..n-1] */
static inline void vf_add_row(float *y, const float *b, int n)
{
    int i = 0;
    for (; i + VL <= n; i += VL) vf_store(y + i, vf_load(y + i) + vf_load(b + i));
    for (; i < n; i++) y[i] += b[i];
}

static inline vf8 vf8_load(const float *p) { vf8 v; memcpy(&v, p, sizeof v); return v; }
static inline void vf8_store(float *p, vf8 v) { memcpy(p, &v, sizeof v); }
static inline vd8 vd8_widen(vf8 v) { return __builtin_convertvector(v, vd8); }
/* The sum of the lanes in a fixed tree. */
static inline double vd8_sum(vd8 v)
{
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

#endif
