/* Multi-head bidirectional softmax self-attention on a fused (B,T,3C) qkv buffer.
 *
 * The fast path runs one sgemm per (batch, head) directly on the strided views of qkv (leading dimension
 * 3C), out and dout (leading dimension C), so no per-head copies are made. Each (batch, head) is one task
 * of the bound thread pool (core/parallel.h): tasks write disjoint columns, so results do not depend on
 * the number of threads. See core/layers.h.
 */
#include "core/layers.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>

#include "core/parallel.h"
#include "core/simd.h"
#include "core/vec.h"

typedef struct attention_job {
    float *out, *att, *dqkv, *scratch;
    const float *qkv, *dout, *att_in;
    float beta;   /* backward: 1 accumulates into dqkv, 0 overwrites it */
    int T, C, NH;
} attention_job;

/* One (sample, head) of the forward pass; task = b * NH + h. */
static void attention_forward_task(void *ctx, int task, int worker)
{
    const attention_job *j = ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, C3 = 3 * C;
    int b = task / NH, h = task % NH;
    float scale = 1.0f / sqrtf((float)hs);
    const float *q = j->qkv + (size_t)b * T * C3 + (size_t)h * hs;  /* (T,hs), ld 3C */
    const float *k = q + C;
    const float *v = q + 2 * C;
    float *a = j->att + (size_t)task * T * T;                       /* (T,T) */
    float *o = j->out + (size_t)b * T * C + (size_t)h * hs;         /* (T,hs), ld C */
    /* scores (T,T) = scale * q k^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f, a, T);
    softmax_forward(a, a, T, T);
    /* o (T,hs) = att (T,T) . v (T,hs) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, v, C3, 0.0f, o, C);
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH)
{
    assert(B >= 0 && T > 0 && NH > 0 && C > 0 && C % NH == 0);
    attention_job j = {.out = out, .att = att, .qkv = qkv, .T = T, .C = C, .NH = NH};
    par_for(B * NH, attention_forward_task, &j);
}

void attention_forward_naive(float *out, float *att, const float *qkv, int B, int T, int C, int NH)
{
    int hs = C / NH, C3 = 3 * C;
    double scale = 1.0 / sqrt((double)hs);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float *a = att + ((size_t)b * NH + h) * T * T;
            for (int i = 0; i < T; i++) {
                const float *q = qkv + ((size_t)b * T + i) * C3 + h * hs;
                double mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    const float *k = qkv + ((size_t)b * T + j) * C3 + C + h * hs;
                    double s = 0.0;
                    for (int d = 0; d < hs; d++) s += (double)q[d] * (double)k[d];
                    s *= scale;
                    a[(size_t)i * T + j] = (float)s;
                    if (s > mx) mx = s;
                }
                double sum = 0.0;
                for (int j = 0; j < T; j++) sum += exp((double)a[(size_t)i * T + j] - mx);
                for (int j = 0; j < T; j++)
                    a[(size_t)i * T + j] = (float)(exp((double)a[(size_t)i * T + j] - mx) / sum);
                for (int d = 0; d < hs; d++) {
                    double s = 0.0;
                    for (int j = 0; j < T; j++)
                        s += (double)a[(size_t)i * T + j] *
                             (double)qkv[((size_t)b * T + j) * C3 + 2 * C + h * hs + d];
                    out[((size_t)b * T + i) * C + h * hs + d] = (float)s;
                }
            }
        }
    }
}

/* Softmax backward in place on a (T,T) tile: dscore_ij = a_ij (datt_ij - sum_l a_il datt_il), the dot
 * in double, eight lanes at a time. */
SIMD_CLONES
static void softmax_backward_rows(float *ds, const float *a, int T)
{
    for (int i = 0; i < T; i++) {
        const float *ar = a + (size_t)i * T;
        float *dr = ds + (size_t)i * T;
        vd8 acc = {0};
        double tail = 0.0;
        int j = 0;
        for (; j + 8 <= T; j += 8) acc += vd8_widen(vf8_load(ar + j)) * vd8_widen(vf8_load(dr + j));
        for (; j < T; j++) tail += (double)ar[j] * (double)dr[j];
        float dotf = (float)(vd8_sum(acc) + tail);
        for (j = 0; j + 8 <= T; j += 8) vf8_store(dr + j, vf8_load(ar + j) * (vf8_load(dr + j) - dotf));
        for (; j < T; j++) dr[j] = ar[j] * (dr[j] - dotf);
    }
}

/* One (sample, head) of the backward pass: it writes only that head's columns of that sample's dqkv. */
static void attention_backward_task(void *ctx, int task, int worker)
{
    const attention_job *j = ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, C3 = 3 * C;
    int b = task / NH, h = task % NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t qoff = (size_t)b * T * C3 + (size_t)h * hs;
    const float *q = j->qkv + qoff, *k = q + C, *v = q + 2 * C;
    float *dq = j->dqkv + qoff, *dk = dq + C, *dv = dq + 2 * C;
    const float *a = j->att_in + (size_t)task * T * T;
    const float *dO = j->dout + (size_t)b * T * C + (size_t)h * hs;
    float *ds = worker == 0 ? j->scratch : par_scratch(worker, (size_t)T * T * sizeof(float)); /* (T,T) */
    /* datt (T,T) = dout (T,hs) . v^T (hs,T) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dO, C, v, C3, 0.0f, ds, T);
    /* dv (T,hs) += att^T (T,T) . dout (T,hs) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, dO, C, j->beta, dv, C3);
    softmax_backward_rows(ds, a, T);
    /* scores = scale * q k^T, so dq += scale * ds . k and dk += scale * ds^T . q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, ds, T, k, C3, j->beta, dq, C3);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, ds, T, q, C3, j->beta, dk, C3);
}

static void attention_backward_job(float *dqkv, float *scratch, const float *dout, const float *qkv,
                                   const float *att, int B, int T, int C, int NH, float beta)
{
    assert(B >= 0 && T > 0 && NH > 0 && C > 0 && C % NH == 0);
    attention_job j = {.dqkv = dqkv, .scratch = scratch, .dout = dout, .qkv = qkv, .att_in = att, .beta = beta,
                       .T = T, .C = C, .NH = NH};
    par_for(B * NH, attention_backward_task, &j);
}

void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH)
{
    attention_backward_job(dqkv, scratch, dout, qkv, att, B, T, C, NH, 1.0f);
}

/* Every (sample, head) task writes its whole block of dq, dk and dv, so beta 0 leaves nothing unset. */
void attention_backward_set(float *dqkv, float *scratch, const float *dout, const float *qkv,
                            const float *att, int B, int T, int C, int NH)
{
    attention_backward_job(dqkv, scratch, dout, qkv, att, B, T, C, NH, 0.0f);
}

void attention_backward_naive(float *dqkv, float *scratch, const float *dout, const float *qkv,
                              const float *att, int B, int T, int C, int NH)
{
    int hs = C / NH, C3 = 3 * C;
    double scale = 1.0 / sqrt((double)hs);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *a = att + ((size_t)b * NH + h) * T * T;
#define Q(t, d) qkv[((size_t)b * T + (t)) * C3 + h * hs + (d)]
#define K(t, d) qkv[((size_t)b * T + (t)) * C3 + C + h * hs + (d)]
#define V(t, d) qkv[((size_t)b * T + (t)) * C3 + 2 * C + h * hs + (d)]
#define DQ(t, d) dqkv[((size_t)b * T + (t)) * C3 + h * hs + (d)]
#define DK(t, d) dqkv[((size_t)b * T + (t)) * C3 + C + h * hs + (d)]
#define DV(t, d) dqkv[((size_t)b * T + (t)) * C3 + 2 * C + h * hs + (d)]
#define DO(t, d) dout[((size_t)b * T + (t)) * C + h * hs + (d)]
            /* scratch first holds datt, then the score gradient. */
            for (int i = 0; i < T; i++) {
                for (int j = 0; j < T; j++) {
                    double s = 0.0;
                    for (int d = 0; d < hs; d++) s += (double)DO(i, d) * (double)V(j, d);
                    scratch[(size_t)i * T + j] = (float)s;
                }
            }
            for (int j = 0; j < T; j++) {
                for (int d = 0; d < hs; d++) {
                    double s = 0.0;
                    for (int i = 0; i < T; i++) s += (double)a[(size_t)i * T + j] * (double)DO(i, d);
                    DV(j, d) += (float)s;
                }
            }
            for (int i = 0; i < T; i++) {
                double dot = 0.0;
                const float *ar = a + (size_t)i * T;
                float *dr = scratch + (size_t)i * T;
                for (int j = 0; j < T; j++) dot += (double)ar[j] * (double)dr[j];
                for (int j = 0; j < T; j++) dr[j] = (float)((double)ar[j] * ((double)dr[j] - dot));
            }
            for (int i = 0; i < T; i++) {
                for (int d = 0; d < hs; d++) {
                    double s = 0.0;
                    for (int j = 0; j < T; j++) s += (double)scratch[(size_t)i * T + j] * (double)K(j, d);
                    DQ(i, d) += (float)(scale * s);
                }
            }
            for (int j = 0; j < T; j++) {
                for (int d = 0; d < hs; d++) {
                    double s = 0.0;
                    for (int i = 0; i < T; i++) s += (double)scratch[(size_t)i * T + j] * (double)Q(i, d);
                    DK(j, d) += (float)(scale * s);
                }
            }
#undef Q
#undef K
#undef V
#undef DQ
#undef DK
#undef DV
#undef DO
        }
    }
}
