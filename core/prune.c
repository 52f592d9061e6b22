/* Rank pruning through QR and a small SVD, and cubic-schedule magnitude pruning of B; see prune.h. */
#include "core/prune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double prune_cubic_fraction(double P, int t1, int t2, int e)
{
    if (e < t1) return 0.0;
    if (t2 < 1 || e >= t1 + t2) return P;
    double x = 1.0 - (double)(e - t1) / (double)t2;
    return P * (1.0 - x * x * x);
}

static void swapf(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* The k-th largest value (0-based) of v (n) by quickselect (Hoare partition, median of three); v is
 * reordered. */
static float kth_largest(float *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] > v[lo]) swapf(&v[mid], &v[lo]);
        if (v[hi] > v[lo]) swapf(&v[hi], &v[lo]);
        if (v[mid] > v[hi]) swapf(&v[mid], &v[hi]);
        float pivot = v[hi];  /* the median of the three */
        size_t i = lo, j = hi;
        for (;;) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i >= j) break;
            swapf(&v[i], &v[j]);
            i++;
            j--;
        }
        /* v[lo..j] >= pivot >= v[j+1..hi] */
        if (k <= j) hi = j;
        else lo = j + 1;
    }
    return v[k];
}

float prune_magnitude_threshold(const float *x, size_t n, size_t k, float *scratch)
{
    if (k == 0) return INFINITY;
    if (k >= n) return 0.0f;
    for (size_t i = 0; i < n; i++) scratch[i] = fabsf(x[i]);
    return kth_largest(scratch, n, k - 1);
}

/* ---- magnitude pruning on the cubic schedule ---- */

/* Visits the distinct B tensors of a (a tied group's shared B once). */
static int b_tensors(const adapter *a, int *idx)
{
    int n = 0;
    for (int li = 0; li < a->n_linear; li++) {
        if (!a->rank[li] || a->B[li] < 0) continue;
        bool seen = false;
        for (int j = 0; j < n; j++) seen |= idx[j] == a->B[li];
        if (!seen) idx[n++] = a->B[li];
    }
    return n;
}

int prune_sched_init(prune_sched *s, const adapter *a, double P, int t1, int t2, clad_err *err)
{
    memset(s, 0, sizeof *s);
    if (a->kind == ADAPTER_FUSION)
        return clad_err_set(err, CLAD_EINVAL, "magnitude pruning applies to lora and tied adapters, not fusion");
    if (!(P >= 0.0 && P < 1.0))
        return clad_err_set(err, CLAD_EINVAL, "magnitude pruning: the final fraction %g is outside [0, 1)", P);
    if (t1 < 1 || t2 < 1)
        return clad_err_set(err, CLAD_EINVAL, "magnitude pruning: t1 = %d and t2 = %d must be at least 1", t1, t2);
    int idx[MODEL_MAX_LINEARS];
    int nb = b_tensors(a, idx);
    for (int j = 0; j < nb; j++) s->n += a->params.t[idx[j]].numel;
    s->P = P;
    s->t1 = t1;
    s->t2 = t2;
    s->mask = calloc(s->n + 1, 1);
    s->scratch = malloc((s->n + 1) * sizeof *s->scratch);
    if (!s->mask || !s->scratch) {
        prune_sched_finish(s);
        return clad_err_set(err, CLAD_ENOMEM, "magnitude pruning: out of memory for %zu entries", s->n);
    }
    return 0;
}

void prune_sched_finish(prune_sched *s)
{
    if (!s) return;
    free(s->mask);
    free(s->scratch);
    s->mask = NULL;
    s->scratch = NULL;
}

/* Gathers every B entry into out (n), in b_tensors order. */
static void gather_b(const adapter *a, float *out)
{
    int idx[MODEL_MAX_LINEARS];
    int nb = b_tensors(a, idx);
    size_t off = 0;
    for (int j = 0; j < nb; j++) {
        size_t n = a->params.t[idx[j]].numel;
        memcpy(out + off, param_set_ptr(&a->params, idx[j]), n * sizeof *out);
        off += n;
    }
}

void prune_sched_step_hook(void *ctx, adapter *a)
{
    prune_sched *s = ctx;
    if (!s->pruned) return;
    int idx[MODEL_MAX_LINEARS];
    int nb = b_tensors(a, idx);
    size_t off = 0;
    for (int j = 0; j < nb; j++) {
        float *b = param_set_ptr(&a->params, idx[j]);
        size_t n = a->params.t[idx[j]].numel;
        for (size_t i = 0; i < n; i++)
            if (s->mask[off + i]) b[i] = 0.0f;
        off += n;
    }
}

int prune_sched_epoch_hook(void *ctx, adapter *a, int epoch, int epochs, clad_err *err)
{
    prune_sched *s = ctx;
    (void)epochs;
    (void)err;
    s->fraction = prune_cubic_fraction(s->P, s->t1, s->t2, epoch);
    size_t target = (size_t)llround(s->fraction * (double)s->n);
    if (target == 0 || s->n == 0) return 0;
    /* Keep the n - target largest magnitudes; prune the rest, breaking ties at the threshold by position. */
    float *vals = malloc(s->n * sizeof *vals);
    if (!vals) return clad_err_set(err, CLAD_ENOMEM, "magnitude pruning: out of memory");
    gather_b(a, vals);
    size_t keep = s->n - target;
    float thr = prune_magnitude_threshold(vals, s->n, keep, s->scratch);
    size_t above = 0;
    for (size_t i = 0; i < s->n; i++) above += fabsf(vals[i]) > thr;
    size_t at_thr_keep = keep - above;  /* entries equal to thr that survive */
    s->pruned = 0;
    for (size_t i = 0; i < s->n; i++) {
        float m = fabsf(vals[i]);
        bool prune = m < thr;
        if (m == thr) {
            if (at_thr_keep) at_thr_keep--;
            else prune = true;
        }
        s->mask[i] = prune;
        s->pruned += prune;
    }
    free(vals);
    prune_sched_step_hook(s, a);
    return 0;
}
