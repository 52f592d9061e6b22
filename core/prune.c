/* Rank pruning through QR and a small SVD, and cubic-schedule magnitude pruning of B; see prune.h. */
#include "core/prune.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/adapter_priv.h"
#include "core/linalg.h"

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
    if (!adapter_has_lora_form(a))
        return clad_err_set(err, CLAD_EINVAL, "magnitude pruning applies to lora and tied adapters, not %s",
                            adapter_kind_name(a->kind));
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

/* ---- rank pruning ---------------------------------------------------------------------------------- */

int prune_factors(float *B2, float *A2, int *k, float *S, const float *B, const float *A, int out, int in, int r,
                  double tau, clad_err *err)
{
    if (r < 1 || r > out || r > in)
        return clad_err_set(err, CLAD_EINVAL, "rank pruning: rank %d must be in [1, min(%d, %d)]", r, out, in);
    if (!(tau > 0.0 && tau <= 1.0)) return clad_err_set(err, CLAD_EINVAL, "rank pruning: tau %g is outside (0, 1]", tau);
    size_t rr = (size_t)r * (size_t)r;
    float *QB = malloc((size_t)out * r * sizeof *QB), *QA = malloc((size_t)in * r * sizeof *QA);
    float *At = malloc((size_t)in * r * sizeof *At), *RB = malloc(rr * sizeof *RB), *RA = malloc(rr * sizeof *RA);
    float *C = malloc(rr * sizeof *C), *Uc = malloc(rr * sizeof *Uc), *Vct = malloc(rr * sizeof *Vct);
    float *Sc = malloc((size_t)r * sizeof *Sc);
    int rc = 0;
    if (!QB || !QA || !At || !RB || !RA || !C || !Uc || !Vct || !Sc) {
        rc = clad_err_set(err, CLAD_ENOMEM, "rank pruning: out of memory");
        goto done;
    }
    for (int j = 0; j < r; j++)
        for (int i = 0; i < in; i++) At[(size_t)i * r + j] = A[(size_t)j * in + i];
    if ((rc = linalg_qr(QB, RB, B, out, r, err)) || (rc = linalg_qr(QA, RA, At, in, r, err))) goto done;
    /* B A = QB (RB RA^T) QA^T: the r x r core carries the whole spectrum. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, r, 1.0f, RB, r, RA, r, 0.0f, C, r);
    if ((rc = linalg_svd(Uc, Sc, Vct, C, r, r, err))) goto done;
    if (S) memcpy(S, Sc, (size_t)r * sizeof *S);
    int kk = linalg_energy_rank(Sc, r, tau);
    *k = kk;
    if (kk == 0) goto done;
    /* B2 (out,k) = QB (out,r) . Uc[:, :k];  A2 (k,in) = Vct[:k, :] (k,r) . QA^T (r,in); then S^(1/2) each. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, kk, r, 1.0f, QB, r, Uc, r, 0.0f, B2, kk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kk, in, r, 1.0f, Vct, r, QA, r, 0.0f, A2, in);
    for (int j = 0; j < kk; j++) {
        float sq = sqrtf(Sc[j]);
        for (int o = 0; o < out; o++) B2[(size_t)o * kk + j] *= sq;
        for (int i = 0; i < in; i++) A2[(size_t)j * in + i] *= sq;
    }
done:
    free(QB);
    free(QA);
    free(At);
    free(RB);
    free(RA);
    free(C);
    free(Uc);
    free(Vct);
    free(Sc);
    return rc;
}

adapter *prune_rank(const adapter *a, const model *m, double tau, clad_err *err)
{
    if (!adapter_is_plain_lora(a)) {
        clad_err_set(err, CLAD_EINVAL, "rank pruning applies to lora adapters, not %s (convert a tied adapter with "
                     "adapter_tied_to_lora)", adapter_kind_name(a->kind));
        return NULL;
    }
    if (!(tau > 0.0 && tau <= 1.0)) {
        clad_err_set(err, CLAD_EINVAL, "rank pruning: tau %g is outside (0, 1]", tau);
        return NULL;
    }
    /* First pass: the new rank of every layer (the factors are recomputed in the second pass: cheap). */
    int ranks[MODEL_MAX_LINEARS] = {0};
    float *B2 = NULL, *A2 = NULL;
    adapter *p = NULL;
    size_t cap = 0;
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li]) {
            size_t need = (size_t)(m->linear[li].out + m->linear[li].in) * (size_t)a->rank[li];
            if (need > cap) cap = need;
        }
    B2 = malloc((cap + 1) * sizeof *B2);
    A2 = malloc((cap + 1) * sizeof *A2);
    if (!B2 || !A2) {
        clad_err_set(err, CLAD_ENOMEM, "rank pruning: out of memory");
        goto fail;
    }
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            p = adapter_create(m, ranks, a->alpha, a->n_classes, err);
            if (!p || adapter_copy_head(p, a, err)) goto fail;
        }
        for (int li = 0; li < a->n_linear; li++) {
            int r = a->rank[li], k = 0;
            if (!r) continue;
            const model_linear *L = &m->linear[li];
            if (prune_factors(B2, A2, &k, NULL, param_set_ptr(&a->params, a->B[li]), param_set_ptr(&a->params, a->A[li]),
                              L->out, L->in, r, tau, err)) {
                clad_err_prefix(err, "layer '%s': ", L->name);
                goto fail;
            }
            if (pass == 0) {
                ranks[li] = k;
                continue;
            }
            p->rank_before[li] = a->rank_before[li] ? a->rank_before[li] : r;
            if (!k) continue;
            /* scale alpha/r becomes alpha/k: multiply the product by k/r, half on each factor */
            float g = sqrtf((float)k / (float)r);
            float *B = param_set_ptr(&p->params, p->B[li]), *A = param_set_ptr(&p->params, p->A[li]);
            for (size_t j = 0; j < (size_t)L->out * k; j++) B[j] = B2[j] * g;
            for (size_t j = 0; j < (size_t)k * L->in; j++) A[j] = A2[j] * g;
        }
    }
    free(B2);
    free(A2);
    return p;
fail:
    free(B2);
    free(A2);
    adapter_destroy(p);
    return NULL;
}
