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

/* The SVD of one layer's B A through thin QRs (see prune.h): B A = QB (Uc Sc Vct) QA^T. */
typedef struct layer_svd {
    int out, in, r;
    float *QB, *QA, *Uc, *Vct, *Sc;
} layer_svd;

static void layer_svd_finish(layer_svd *w)
{
    free(w->QB);
    free(w->QA);
    free(w->Uc);
    free(w->Vct);
    free(w->Sc);
}

static int layer_svd_run(layer_svd *w, const float *B, const float *A, int out, int in, int r, clad_err *err)
{
    memset(w, 0, sizeof *w);
    if (r < 1 || r > out || r > in)
        return clad_err_set(err, CLAD_EINVAL, "rank pruning: rank %d must be in [1, min(%d, %d)]", r, out, in);
    w->out = out;
    w->in = in;
    w->r = r;
    size_t rr = (size_t)r * (size_t)r;
    w->QB = malloc((size_t)out * r * sizeof *w->QB);
    w->QA = malloc((size_t)in * r * sizeof *w->QA);
    w->Uc = malloc(rr * sizeof *w->Uc);
    w->Vct = malloc(rr * sizeof *w->Vct);
    w->Sc = malloc((size_t)r * sizeof *w->Sc);
    float *At = malloc((size_t)in * r * sizeof *At), *RB = malloc(rr * sizeof *RB), *RA = malloc(rr * sizeof *RA);
    float *C = malloc(rr * sizeof *C);
    int rc = 0;
    if (!w->QB || !w->QA || !w->Uc || !w->Vct || !w->Sc || !At || !RB || !RA || !C) {
        rc = clad_err_set(err, CLAD_ENOMEM, "rank pruning: out of memory");
        goto done;
    }
    for (int j = 0; j < r; j++)
        for (int i = 0; i < in; i++) At[(size_t)i * r + j] = A[(size_t)j * in + i];
    if ((rc = linalg_qr(w->QB, RB, B, out, r, err)) || (rc = linalg_qr(w->QA, RA, At, in, r, err))) goto done;
    /* B A = QB (RB RA^T) QA^T: the r x r core carries the whole spectrum. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, r, 1.0f, RB, r, RA, r, 0.0f, C, r);
    rc = linalg_svd(w->Uc, w->Sc, w->Vct, C, r, r, err);
done:
    free(At);
    free(RB);
    free(RA);
    free(C);
    if (rc) layer_svd_finish(w);
    return rc;
}

/* B2 (out,k) = QB Uc[:, :k] and A2 (k,in) = Vct[:k, :] QA^T, each times S^(1/2) and g. */
static void layer_svd_factors(float *B2, float *A2, const layer_svd *w, int k, float g)
{
    int out = w->out, in = w->in, r = w->r;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, k, r, 1.0f, w->QB, r, w->Uc, r, 0.0f, B2, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, in, r, 1.0f, w->Vct, r, w->QA, r, 0.0f, A2, in);
    for (int j = 0; j < k; j++) {
        float sq = sqrtf(w->Sc[j]) * g;
        for (int o = 0; o < out; o++) B2[(size_t)o * k + j] *= sq;
        for (int i = 0; i < in; i++) A2[(size_t)j * in + i] *= sq;
    }
}

int prune_factors(float *B2, float *A2, int *k, float *S, const float *B, const float *A, int out, int in, int r,
                  double tau, clad_err *err)
{
    if (!(tau > 0.0 && tau <= 1.0)) return clad_err_set(err, CLAD_EINVAL, "rank pruning: tau %g is outside (0, 1]", tau);
    layer_svd w;
    int rc = layer_svd_run(&w, B, A, out, in, r, err);
    if (rc) return rc;
    if (S) memcpy(S, w.Sc, (size_t)r * sizeof *S);
    *k = linalg_energy_rank(w.Sc, r, tau);
    if (*k) layer_svd_factors(B2, A2, &w, *k, 1.0f);
    layer_svd_finish(&w);
    return 0;
}

static bool check_plain_lora(const adapter *a, clad_err *err)
{
    if (adapter_is_plain_lora(a)) return true;
    clad_err_set(err, CLAD_EINVAL, "rank pruning applies to lora adapters, not %s (convert a tied adapter with "
                 "adapter_tied_to_lora)", adapter_kind_name(a->kind));
    return false;
}

int prune_spectra(float *S, const adapter *a, const model *m, clad_err *err)
{
    if (!check_plain_lora(a, err)) return CLAD_EINVAL;
    for (int li = 0; li < a->n_linear; li++) {
        const model_linear *L = &m->linear[li];
        float *Sl = S + (size_t)li * PRUNE_MAX_RANK;
        memset(Sl, 0, PRUNE_MAX_RANK * sizeof *Sl);
        int r = a->rank[li];
        if (!r) continue;
        if (r > PRUNE_MAX_RANK)
            return clad_err_set(err, CLAD_EINVAL, "rank pruning: layer '%s' has rank %d, above %d", L->name, r,
                                PRUNE_MAX_RANK);
        layer_svd w;
        int rc = layer_svd_run(&w, param_set_ptr(&a->params, a->B[li]), param_set_ptr(&a->params, a->A[li]), L->out,
                               L->in, r, err);
        if (rc) {
            clad_err_prefix(err, "layer '%s': ", L->name);
            return rc;
        }
        memcpy(Sl, w.Sc, (size_t)r * sizeof *Sl);
        layer_svd_finish(&w);
    }
    return 0;
}

adapter *prune_rank_to(const adapter *a, const model *m, const int *ranks, clad_err *err)
{
    if (!check_plain_lora(a, err)) return NULL;
    for (int li = 0; li < a->n_linear; li++)
        if (ranks[li] < 0 || ranks[li] > a->rank[li]) {
            clad_err_set(err, CLAD_EINVAL, "rank pruning: layer '%s' cannot go from rank %d to %d", m->linear[li].name,
                         a->rank[li], ranks[li]);
            return NULL;
        }
    adapter *p = adapter_create(m, ranks, a->alpha, a->n_classes, err);
    if (!p || adapter_copy_head(p, a, err)) goto fail;
    for (int li = 0; li < a->n_linear; li++) {
        int r = a->rank[li], k = ranks[li];
        if (!r) continue;
        p->rank_before[li] = a->rank_before[li] ? a->rank_before[li] : r;
        if (!k) continue;
        const model_linear *L = &m->linear[li];
        layer_svd w;
        if (layer_svd_run(&w, param_set_ptr(&a->params, a->B[li]), param_set_ptr(&a->params, a->A[li]), L->out, L->in,
                          r, err)) {
            clad_err_prefix(err, "layer '%s': ", L->name);
            goto fail;
        }
        /* scale alpha/r becomes alpha/k: multiply the product by k/r, half on each factor */
        layer_svd_factors(param_set_ptr(&p->params, p->B[li]), param_set_ptr(&p->params, p->A[li]), &w, k,
                          sqrtf((float)k / (float)r));
        layer_svd_finish(&w);
    }
    return p;
fail:
    adapter_destroy(p);
    return NULL;
}

adapter *prune_rank(const adapter *a, const model *m, double tau, clad_err *err)
{
    if (!(tau > 0.0 && tau <= 1.0)) {
        clad_err_set(err, CLAD_EINVAL, "rank pruning: tau %g is outside (0, 1]", tau);
        return NULL;
    }
    float *S = malloc((size_t)MODEL_MAX_LINEARS * PRUNE_MAX_RANK * sizeof *S);
    int ranks[MODEL_MAX_LINEARS] = {0};
    adapter *p = NULL;
    if (!S) clad_err_set(err, CLAD_ENOMEM, "rank pruning: out of memory");
    else if (!prune_spectra(S, a, m, err)) {
        for (int li = 0; li < a->n_linear; li++)
            ranks[li] = linalg_energy_rank(S + (size_t)li * PRUNE_MAX_RANK, a->rank[li], tau);
        p = prune_rank_to(a, m, ranks, err);
    }
    free(S);
    return p;
}
