/* Task arithmetic, TIES and DRM on dense per-layer deltas, merged backbones and export as a LoRA; see
 * merge.h. */
#include "core/merge.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/adapter_priv.h"
#include "core/linalg.h"
#include "core/prune.h"

/* A task's share nu of a unit singular vector below this is round-off of the float SVD (its exact value is
 * 0, e.g. for tasks with orthogonal deltas), not a direction of that task: renormalising it would turn noise
 * into a unit vector that then counts as a task in the sign election and the disjoint mean. */
#define DRM_NU_EPS 1e-5

void merge_config_default(merge_config *c, merge_method method)
{
    memset(c, 0, sizeof *c);
    c->method = method;
    c->drop = method == MERGE_TA ? 0.0f : 0.8f;
    c->lambda = 1.0f;
    c->rank_rtol = 0.01f;
    c->sign_elect = true;
    c->disjoint_mean = true;
}

static const char *const method_names[] = {NULL, "ta", "ties", "drm-h", "drm-v"};

const char *merge_method_name(merge_method m)
{
    return m >= MERGE_TA && m <= MERGE_DRM_V ? method_names[m] : "unknown";
}

int merge_method_parse(merge_method *m, const char *name, clad_err *err)
{
    for (int i = MERGE_TA; i <= MERGE_DRM_V; i++)
        if (!strcmp(name, method_names[i])) {
            *m = (merge_method)i;
            return 0;
        }
    return clad_err_set(err, CLAD_EINVAL, "unknown merge method '%s' (known: ta, ties, drm-h, drm-v)", name);
}

int merge_config_validate(const merge_config *c, int n_tasks, clad_err *err)
{
    if (c->method < MERGE_TA || c->method > MERGE_DRM_V)
        return clad_err_set(err, CLAD_EINVAL, "merge: unknown method %d", (int)c->method);
    if (n_tasks < 1 || n_tasks > MERGE_MAX_TASKS)
        return clad_err_set(err, CLAD_EINVAL, "merge: %d tasks is outside [1, %d]", n_tasks, MERGE_MAX_TASKS);
    if (!(c->drop >= 0.0f && c->drop < 1.0f))
        return clad_err_set(err, CLAD_EINVAL, "merge: drop %g is outside [0, 1)", (double)c->drop);
    if (!isfinite(c->lambda))
        return clad_err_set(err, CLAD_EINVAL, "merge: lambda must be a finite number");
    if (!(c->rank_rtol >= 0.0f && c->rank_rtol < 1.0f))
        return clad_err_set(err, CLAD_EINVAL, "merge: rank_rtol %g is outside [0, 1)", (double)c->rank_rtol);
    for (int i = 0; c->coef && i < n_tasks; i++)
        if (!isfinite(c->coef[i]))
            return clad_err_set(err, CLAD_EINVAL, "merge: the coefficient of task %d is not finite", i);
    return 0;
}

/* ---- the shared steps ------------------------------------------------------------------------------ */

/* Zeroes the entries of the N arrays X[i] (L each) below the magnitude that keeps the top (1 - drop) of
 * all N*L entries together (joint) or of each array on its own. */
static int trim(float *const *X, int N, size_t L, float drop, bool joint, clad_err *err)
{
    if (drop <= 0.0f || L == 0) return 0;
    size_t total = joint ? (size_t)N * L : L;
    float *all = malloc(total * sizeof *all), *scratch = malloc(total * sizeof *scratch);
    if (!all || !scratch) {
        free(all);
        free(scratch);
        return clad_err_set(err, CLAD_ENOMEM, "merge: out of memory trimming %zu entries", total);
    }
    size_t keep = (size_t)llround((1.0 - (double)drop) * (double)total);
    /* joint: one threshold over every task's entries; else one per task */
    for (int i = 0; i < (joint ? 1 : N); i++) {
        if (joint)
            for (int t = 0; t < N; t++) memcpy(all + (size_t)t * L, X[t], L * sizeof *all);
        float thr = prune_magnitude_threshold(joint ? all : X[i], total, keep, scratch);
        for (int t = joint ? 0 : i; t < (joint ? N : i + 1); t++)
            for (size_t j = 0; j < L; j++)
                if (fabsf(X[t][j]) < thr) X[t][j] = 0.0f;
    }
    free(all);
    free(scratch);
    return 0;
}

/* out (L) = the elected, weighted, disjoint mean of X[0..N) (L each, modified: disagreeing entries are
 * zeroed). */
static void elect_and_mean(float *out, float *const *X, int N, size_t L, const merge_config *c)
{
    if (c->sign_elect) {
        /* sign per entry from the summed values; a zero sum takes the majority sign of the non-zero sums */
        double majority = 0.0;
        for (size_t j = 0; j < L; j++) {
            double s = 0.0;
            for (int i = 0; i < N; i++) s += (double)X[i][j];
            majority += (s > 0.0) - (s < 0.0);
        }
        for (size_t j = 0; j < L; j++) {
            double s = 0.0;
            for (int i = 0; i < N; i++) s += (double)X[i][j];
            int sign = (s > 0.0) - (s < 0.0);
            if (!sign) sign = majority >= 0.0 ? 1 : -1;
            for (int i = 0; i < N; i++)
                if ((sign > 0 && X[i][j] < 0.0f) || (sign < 0 && X[i][j] > 0.0f)) X[i][j] = 0.0f;
        }
    }
    for (size_t j = 0; j < L; j++) {
        double s = 0.0;
        int count = 0;
        for (int i = 0; i < N; i++) {
            if (X[i][j] == 0.0f) continue;
            s += (double)(c->coef ? c->coef[i] : 1.0f) * (double)X[i][j];
            count++;
        }
        if (c->disjoint_mean && count > 1) s /= count;
        out[j] = (float)s * c->lambda;
    }
}

/* ---- DRM ------------------------------------------------------------------------------------------- */

/* DRM-H: M = [dW_1 | ... | dW_N] (n, N m) = U S Vt; each task's block of Vt (r, m) has its rows normalised,
 * the norms folded into per-task singular values; the merged core X (r, m) maps back as U_r X. */
static int drm_h(float *out, const float *const *deltas, int N, int n, int m, const merge_config *c, clad_err *err)
{
    int Nm = N * m, k = n < Nm ? n : Nm;
    float *M = malloc((size_t)n * Nm * sizeof *M), *U = malloc((size_t)n * k * sizeof *U);
    float *S = malloc((size_t)k * sizeof *S), *Vt = malloc((size_t)k * Nm * sizeof *Vt);
    float *X = NULL, *blocks = NULL, *Si = NULL;
    int rc = 0;
    if (!M || !U || !S || !Vt) {
        rc = clad_err_set(err, CLAD_ENOMEM, "merge: out of memory for a %dx%d SVD", n, Nm);
        goto done;
    }
    for (int i = 0; i < N; i++)
        for (int o = 0; o < n; o++) memcpy(M + (size_t)o * Nm + (size_t)i * m, deltas[i] + (size_t)o * m, (size_t)m * sizeof *M);
    if ((rc = linalg_svd(U, S, Vt, M, n, Nm, err))) goto done;
    int r = 0;
    while (r < k && S[r] > c->rank_rtol * S[0] && S[r] > 0.0f) r++;
    memset(out, 0, (size_t)n * m * sizeof *out);
    if (r == 0) goto done;
    size_t L = (size_t)r * m;
    blocks = malloc((size_t)N * L * sizeof *blocks);
    Si = malloc((size_t)N * r * sizeof *Si);
    X = malloc(L * sizeof *X);
    if (!blocks || !Si || !X) {
        rc = clad_err_set(err, CLAD_ENOMEM, "merge: out of memory");
        goto done;
    }
    float *Xi[MERGE_MAX_TASKS] = {0};
    for (int i = 0; i < N; i++) {
        Xi[i] = blocks + (size_t)i * L;
        for (int j = 0; j < r; j++) {
            const float *row = Vt + (size_t)j * Nm + (size_t)i * m;
            double nu = 0.0;
            for (int q = 0; q < m; q++) nu += (double)row[q] * (double)row[q];
            nu = sqrt(nu);
            if (nu < DRM_NU_EPS) nu = 0.0;
            Si[(size_t)i * r + j] = (float)((double)S[j] * nu);
            for (int q = 0; q < m; q++) Xi[i][(size_t)j * m + q] = nu > 0.0 ? (float)((double)row[q] / nu) : 0.0f;
        }
    }
    if ((rc = trim(Xi, N, L, c->drop, true, err))) goto done;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < r; j++)
            for (int q = 0; q < m; q++) Xi[i][(size_t)j * m + q] *= Si[(size_t)i * r + j];
    elect_and_mean(X, Xi, N, L, c);
    /* out (n,m) = U[:, :r] (n,r) . X (r,m) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, r, 1.0f, U, k, X, m, 0.0f, out, m);
done:
    free(M);
    free(U);
    free(S);
    free(Vt);
    free(X);
    free(blocks);
    free(Si);
    return rc;
}

/* DRM-V: rows stacked, [dW_1; ...; dW_N] (N n, m); each task's block of U has its columns renormalised. That
 * is DRM-H of the transposed deltas, transposed back: [dW_1^T | ... | dW_N^T] = [dW_1; ...; dW_N]^T, so its
 * right singular vectors are DRM-V's left ones, and trimming, sign election and the disjoint mean act on the
 * same entries. */
static void transpose(float *dst, const float *src, int rows, int cols)
{
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < cols; q++) dst[(size_t)q * rows + r] = src[(size_t)r * cols + q];
}

static int drm_v(float *out, const float *const *deltas, int N, int n, int m, const merge_config *c, clad_err *err)
{
    size_t L = (size_t)n * m;
    float *dT = malloc((size_t)N * L * sizeof *dT), *outT = malloc(L * sizeof *outT);
    const float *dTi[MERGE_MAX_TASKS];
    int rc = 0;
    if (!dT || !outT) {
        rc = clad_err_set(err, CLAD_ENOMEM, "merge: out of memory for %d transposed %dx%d deltas", N, n, m);
        goto done;
    }
    for (int i = 0; i < N; i++) {
        transpose(dT + (size_t)i * L, deltas[i], n, m);
        dTi[i] = dT + (size_t)i * L;
    }
    if ((rc = drm_h(outT, dTi, N, m, n, c, err))) goto done;
    transpose(out, outT, m, n);
done:
    free(dT);
    free(outT);
    return rc;
}

int merge_deltas(float *out, const float *const *deltas, int N, int n, int m, const merge_config *c, clad_err *err)
{
    int rc = merge_config_validate(c, N, err);
    if (rc) return rc;
    if (n < 1 || m < 1) return clad_err_set(err, CLAD_EINVAL, "merge: a %dx%d delta is empty", n, m);
    size_t L = (size_t)n * (size_t)m;
    if (c->method == MERGE_DRM_H) return drm_h(out, deltas, N, n, m, c, err);
    if (c->method == MERGE_DRM_V) return drm_v(out, deltas, N, n, m, c, err);
    if (c->method == MERGE_TA) {
        for (size_t j = 0; j < L; j++) {
            double s = 0.0;
            for (int i = 0; i < N; i++) s += (double)(c->coef ? c->coef[i] : 1.0f) * (double)deltas[i][j];
            out[j] = (float)s * c->lambda;
        }
        return 0;
    }
    /* TIES in weight space: trim each task, elect, disjoint mean. */
    float *copy = malloc((size_t)N * L * sizeof *copy);
    if (!copy) return clad_err_set(err, CLAD_ENOMEM, "merge: out of memory for %d deltas of %zu", N, L);
    float *Xi[MERGE_MAX_TASKS] = {0};
    for (int i = 0; i < N; i++) {
        Xi[i] = copy + (size_t)i * L;
        memcpy(Xi[i], deltas[i], L * sizeof *copy);
    }
    rc = trim(Xi, N, L, c->drop, false, err);
    if (!rc) elect_and_mean(out, Xi, N, L, c);
    free(copy);
    return rc;
}

/* ---- models ---------------------------------------------------------------------------------------- */

static model *model_copy(const model *m, clad_err *err)
{
    model *c = model_create(&m->cfg, err);
    if (c) memcpy(c->params.data, m->params.data, m->params.total * sizeof(float));
    return c;
}

model *merge_backbone(const model *base, const adapter *const *sources, int N, const merge_config *c,
                      clad_err *err)
{
    if (merge_config_validate(c, N, err)) return NULL;
    for (int i = 0; i < N; i++) {
        const adapter *s = sources[i];
        if (!s || !adapter_has_lora_form(s) || s->n_linear != base->n_linear) {
            clad_err_set(err, CLAD_EINVAL, "merge: source %d is %s", i,
                         !s ? "missing" : !adapter_has_lora_form(s) ? "a fusion adapter (merge its sources instead)"
                                                                    : "made for another model");
            return NULL;
        }
        for (int li = 0; li < base->n_linear; li++)
            if (s->rank[li] && (s->params.t[s->A[li]].shape[1] != base->linear[li].in ||
                                s->params.t[s->B[li]].shape[0] != base->linear[li].out)) {
                clad_err_set(err, CLAD_EINVAL, "merge: source %d was made for another model (layer '%s')", i,
                             base->linear[li].name);
                return NULL;
            }
    }
    model *merged = model_copy(base, err);
    if (!merged) return NULL;
    for (int li = 0; li < base->n_linear; li++) {
        const model_linear *L = &base->linear[li];
        bool any = false;
        for (int i = 0; i < N; i++) any |= sources[i]->rank[li] > 0;
        if (L->is_head || !any) continue;
        size_t sz = (size_t)L->out * (size_t)L->in;
        float *buf = malloc((size_t)(N + 1) * sz * sizeof *buf);
        if (!buf) {
            clad_err_set(err, CLAD_ENOMEM, "merge: out of memory for the deltas of '%s'", L->name);
            model_destroy(merged);
            return NULL;
        }
        const float *deltas[MERGE_MAX_TASKS];
        for (int i = 0; i < N; i++) {
            adapter_delta(buf + (size_t)i * sz, sources[i], base, li);
            deltas[i] = buf + (size_t)i * sz;
        }
        float *out = buf + (size_t)N * sz;
        int rc = merge_deltas(out, deltas, N, L->out, L->in, c, err);
        if (!rc) {
            float *W = param_set_ptr(&merged->params, L->weight);
            for (size_t j = 0; j < sz; j++) W[j] += out[j];
        }
        free(buf);
        if (rc) {
            clad_err_prefix(err, "layer '%s': ", L->name);
            model_destroy(merged);
            return NULL;
        }
    }
    return merged;
}

adapter *merge_head_adapter(const model *merged, const adapter *src, clad_err *err)
{
    adapter *a = adapter_create(merged, NULL, 1.0f, src->n_classes, err);
    if (a && adapter_copy_head(a, src, err)) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}

adapter *merge_to_lora(const model *base, const model *merged, int rank, const adapter *head_src, clad_err *err)
{
    if (rank < 1) {
        clad_err_set(err, CLAD_EINVAL, "merge export: rank %d must be at least 1", rank);
        return NULL;
    }
    if (!param_set_same_layout(&base->params, &merged->params)) {
        clad_err_set(err, CLAD_EINVAL, "merge export: the merged model does not have the base's layout");
        return NULL;
    }
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < base->n_linear; li++) {
        const model_linear *L = &base->linear[li];
        if (L->is_head) continue;
        size_t sz = (size_t)L->out * (size_t)L->in;
        const float *W0 = param_set_ptr(&base->params, L->weight), *W1 = param_set_ptr(&merged->params, L->weight);
        bool differs = false;
        for (size_t j = 0; j < sz && !differs; j++) differs = W0[j] != W1[j];
        int max_r = model_linear_max_rank(L->out, L->in);
        if (differs) ranks[li] = rank < max_r ? rank : max_r;
    }
    int K = head_src ? head_src->n_classes : base->cfg.n_classes;
    adapter *a = adapter_create(base, ranks, (float)rank, K, err);
    if (!a) return NULL;
    adapter_init(a, base, 1);  /* the head from the base when the classes match; factors overwritten below */
    for (int li = 0; li < base->n_linear; li++) {
        int k = ranks[li];
        if (!k) continue;
        const model_linear *L = &base->linear[li];
        int out = L->out, in = L->in, q = model_linear_max_rank(out, in);
        size_t sz = (size_t)out * (size_t)in;
        float *D = malloc(sz * sizeof *D), *U = malloc((size_t)out * q * sizeof *U);
        float *S = malloc((size_t)q * sizeof *S), *Vt = malloc((size_t)q * in * sizeof *Vt);
        int rc = !D || !U || !S || !Vt ? clad_err_set(err, CLAD_ENOMEM, "merge export: out of memory") : 0;
        if (!rc) {
            const float *W0 = param_set_ptr(&base->params, L->weight), *W1 = param_set_ptr(&merged->params, L->weight);
            for (size_t j = 0; j < sz; j++) D[j] = W1[j] - W0[j];
            rc = linalg_svd(U, S, Vt, D, out, in, err);
        }
        if (!rc) {
            /* scale alpha/k = rank/k; fold its inverse into B so scale B A = U_k S_k V_k^T */
            float fold = (float)k / (float)rank;
            float *A = param_set_ptr(&a->params, a->A[li]), *B = param_set_ptr(&a->params, a->B[li]);
            for (int j = 0; j < k; j++) {
                float sq = sqrtf(S[j]);
                for (int o = 0; o < out; o++) B[(size_t)o * k + j] = U[(size_t)o * q + j] * sq * fold;
                for (int i = 0; i < in; i++) A[(size_t)j * in + i] = Vt[(size_t)j * in + i] * sq;
            }
        }
        free(D);
        free(U);
        free(S);
        free(Vt);
        if (rc) {
            clad_err_prefix(err, "layer '%s': ", L->name);
            adapter_destroy(a);
            return NULL;
        }
    }
    if (head_src && adapter_copy_head(a, head_src, err)) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}
