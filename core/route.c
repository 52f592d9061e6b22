/* Routing statistics and the shared-covariance (LDA) task_router; see route.h. */
#include "core/route.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_BATCH 256

struct task_router {
    int dim, n_tasks, n_classes;  /* classes with samples, over all tasks */
    int *cls_task;                /* (C) task of each class */
    float *mean;                  /* (C,dim) */
    double *half;                 /* (C) -mu^T P mu / 2 */
    double *log_prior;            /* (C) -log(T K_t): tasks equally likely, and classes within a task */
    float *P;                     /* (dim,dim) shrunk precision */
};

int route_stats_init(route_stats *rs, int dim, int n_classes, clad_err *err)
{
    memset(rs, 0, sizeof *rs);
    if (dim < 1 || dim > DATASET_MAX_DIM || n_classes < 1 || n_classes > MODEL_MAX_CLASSES)
        return clad_err_set(err, CLAD_EINVAL, "routing: %d features and %d classes are out of range", dim, n_classes);
    rs->dim = dim;
    rs->n_classes = n_classes;
    rs->count = calloc((size_t)n_classes, sizeof *rs->count);
    rs->mean = calloc((size_t)n_classes * dim, sizeof *rs->mean);
    rs->scatter = calloc((size_t)dim * dim, sizeof *rs->scatter);
    if (!rs->count || !rs->mean || !rs->scatter) {
        route_stats_finish(rs);
        return clad_err_set(err, CLAD_ENOMEM, "routing: out of memory for %d features", dim);
    }
    return 0;
}

void route_stats_finish(route_stats *rs)
{
    if (!rs) return;
    free(rs->count);
    free(rs->mean);
    free(rs->scatter);
    memset(rs, 0, sizeof *rs);
}

size_t route_stats_bytes(const route_stats *rs)
{
    size_t d = (size_t)rs->dim, K = (size_t)rs->n_classes;
    return (K + K * d + d * (d + 1) / 2) * sizeof(float);
}

int route_stats_seen(const route_stats *rs)
{
    int n = 0;
    for (int c = 0; c < rs->n_classes; c++) n += rs->count[c] > 0;
    return n;
}

void route_base_features(float *feat, model_ws *ws, const model *base, const float *x, int n)
{
    int B = model_ws_max_batch(ws), D = model_feature_dim(base), in = model_config_input_dim(&base->cfg);
    for (int s = 0; s < n; s += B) {
        int k = n - s < B ? n - s : B;
        model_forward(ws, base, NULL, x + (size_t)s * in, NULL, k);
        memcpy(feat + (size_t)s * D, model_ws_features(ws), (size_t)k * D * sizeof *feat);
    }
}

int route_stats_compute(route_stats *rs, const model *base, const dataset *d, int n_classes, clad_err *err)
{
    int D = model_feature_dim(base), rc = route_stats_init(rs, D, n_classes, err);
    if (rc) return rc;
    /* Two passes over the features (held only for this call): class means in double, then the scatter of
     * the centred features, which keeps the precision a one-pass sum of f f^T would lose. */
    float *feat = malloc((size_t)d->n * D * sizeof *feat), *cen = malloc((size_t)ROUTE_BATCH * D * sizeof *cen);
    float *part = malloc((size_t)D * D * sizeof *part);
    double *sum = calloc((size_t)n_classes * D, sizeof *sum), *S = calloc((size_t)D * D, sizeof *S);
    long *cnt = calloc((size_t)n_classes, sizeof *cnt);
    model_ws *ws = NULL;
    if (!feat || !cen || !part || !sum || !S || !cnt) {
        rc = clad_err_set(err, CLAD_ENOMEM, "routing: out of memory for the features of %d samples", d->n);
        goto done;
    }
    if (!(ws = model_ws_create_for(base, NULL, ROUTE_BATCH, false, err))) {
        rc = err ? err->code : CLAD_ENOMEM;
        goto done;
    }
    route_base_features(feat, ws, base, d->x, d->n);
    for (int i = 0; i < d->n; i++) {
        int c = d->y[i];
        if (c < 0 || c >= n_classes) continue;
        cnt[c]++;
        for (int k = 0; k < D; k++) sum[(size_t)c * D + k] += (double)feat[(size_t)i * D + k];
    }
    int seen = 0;
    for (int c = 0; c < n_classes; c++) {
        if (cnt[c] < ROUTE_MIN_CLASS_SAMPLES) continue;
        seen++;
        rs->count[c] = (float)cnt[c];
        for (int k = 0; k < D; k++) rs->mean[(size_t)c * D + k] = (float)(sum[(size_t)c * D + k] / (double)cnt[c]);
    }
    if (!seen) {
        rc = clad_err_set(err, CLAD_EINVAL, "routing: no class has %d or more samples", ROUTE_MIN_CLASS_SAMPLES);
        goto done;
    }
    int b = 0;
    for (int i = 0; i <= d->n; i++) {
        bool flush = b == ROUTE_BATCH || (i == d->n && b);
        if (flush) {
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, D, b, 1.0f, cen, D, 0.0f, part, D);
            for (int r = 0; r < D; r++)
                for (int k = r; k < D; k++) S[(size_t)r * D + k] += (double)part[(size_t)r * D + k];
            b = 0;
        }
        if (i == d->n) break;
        int c = d->y[i];
        if (c < 0 || c >= n_classes || rs->count[c] == 0) continue;
        for (int k = 0; k < D; k++) cen[(size_t)b * D + k] = feat[(size_t)i * D + k] - rs->mean[(size_t)c * D + k];
        b++;
    }
    for (int r = 0; r < D; r++)
        for (int k = r; k < D; k++) rs->scatter[(size_t)r * D + k] = rs->scatter[(size_t)k * D + r] = (float)S[(size_t)r * D + k];
done:
    model_ws_destroy(ws);
    free(feat);
    free(cen);
    free(part);
    free(sum);
    free(S);
    free(cnt);
    if (rc) route_stats_finish(rs);
    return rc;
}

/* In place: A (n,n) symmetric positive definite -> its inverse, through the Cholesky factor A = L L^T.
 * Returns false if A is not positive definite. */
static bool spd_invert(double *A, int n)
{
    double *L = calloc((size_t)n * n, sizeof *L), *Li = calloc((size_t)n * n, sizeof *Li);
    if (!L || !Li) abort(); /* the size of the task_router being built */
    bool ok = true;
    for (int j = 0; ok && j < n; j++) {
        double s = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) s -= L[(size_t)j * n + k] * L[(size_t)j * n + k];
        if (!(s > 0)) ok = false;
        else L[(size_t)j * n + j] = sqrt(s);
        for (int i = j + 1; ok && i < n; i++) {
            double t = A[(size_t)i * n + j];
            for (int k = 0; k < j; k++) t -= L[(size_t)i * n + k] * L[(size_t)j * n + k];
            L[(size_t)i * n + j] = t / L[(size_t)j * n + j];
        }
    }
    for (int j = 0; ok && j < n; j++) {
        Li[(size_t)j * n + j] = 1.0 / L[(size_t)j * n + j];
        for (int i = j + 1; i < n; i++) {
            double t = 0;
            for (int k = j; k < i; k++) t += L[(size_t)i * n + k] * Li[(size_t)k * n + j];
            Li[(size_t)i * n + j] = -t / L[(size_t)i * n + i];
        }
    }
    /* A^-1 = Li^T Li */
    for (int a = 0; ok && a < n; a++)
        for (int b = a; b < n; b++) {
            double t = 0;
            for (int k = b; k < n; k++) t += Li[(size_t)k * n + a] * Li[(size_t)k * n + b];
            A[(size_t)a * n + b] = A[(size_t)b * n + a] = t;
        }
    free(L);
    free(Li);
    return ok;
}

task_router *task_router_create(const route_stats *const *tasks, int n_tasks, double shrink, clad_err *err)
{
    if (n_tasks < 1) {
        clad_err_set(err, CLAD_EINVAL, "routing: no task to route to");
        return NULL;
    }
    int D = tasks[0]->dim, C = 0;
    double n_eff = 0;
    for (int t = 0; t < n_tasks; t++) {
        if (tasks[t]->dim != D) {
            clad_err_set(err, CLAD_EINVAL, "routing: task %d has %d features, task 0 has %d", t, tasks[t]->dim, D);
            return NULL;
        }
        int seen = route_stats_seen(tasks[t]);
        C += seen;
        for (int c = 0; c < tasks[t]->n_classes; c++) n_eff += (double)tasks[t]->count[c];
        n_eff -= seen;
    }
    if (C > ROUTE_MAX_CLASSES) {
        clad_err_set(err, CLAD_ETOOLARGE, "routing: %d classes over all tasks (limit %d)", C, ROUTE_MAX_CLASSES);
        return NULL;
    }
    if (!C || n_eff < 1) {
        clad_err_set(err, CLAD_EINVAL, "routing: too few samples for a covariance");
        return NULL;
    }
    task_router *r = calloc(1, sizeof *r);
    double *A = calloc((size_t)D * D, sizeof *A);
    if (!r || !A) abort();
    r->dim = D;
    r->n_tasks = n_tasks;
    r->n_classes = C;
    r->cls_task = malloc((size_t)C * sizeof *r->cls_task);
    r->mean = malloc((size_t)C * D * sizeof *r->mean);
    r->half = malloc((size_t)C * sizeof *r->half);
    r->log_prior = malloc((size_t)C * sizeof *r->log_prior);
    r->P = malloc((size_t)D * D * sizeof *r->P);
    float *Pm = malloc((size_t)D * sizeof *Pm);
    if (!r->cls_task || !r->mean || !r->half || !r->log_prior || !r->P || !Pm) {
        free(A);
        free(Pm);
        task_router_destroy(r);
        clad_err_set(err, CLAD_ENOMEM, "routing: out of memory for %d classes", C);
        return NULL;
    }
    /* Pooled within-class covariance, shrunk towards (tr / d) I. */
    for (int t = 0; t < n_tasks; t++)
        for (size_t k = 0; k < (size_t)D * D; k++) A[k] += (double)tasks[t]->scatter[k];
    double tr = 0;
    for (int k = 0; k < D; k++) tr += A[(size_t)k * D + k] / n_eff;
    double target = tr > 0 ? tr / D : 1e-12;
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++)
            A[(size_t)a * D + b] = (1 - shrink) * A[(size_t)a * D + b] / n_eff + (a == b ? shrink * target : 0.0);
    if (!spd_invert(A, D)) {
        free(A);
        free(Pm);
        task_router_destroy(r);
        clad_err_set(err, CLAD_EINVAL, "routing: the pooled covariance is singular (raise the shrinkage)");
        return NULL;
    }
    for (size_t k = 0; k < (size_t)D * D; k++) r->P[k] = (float)A[k];
    free(A);
    int ci = 0;
    for (int t = 0; t < n_tasks; t++) {
        double log_prior = -log((double)n_tasks * route_stats_seen(tasks[t]));
        for (int c = 0; c < tasks[t]->n_classes; c++) {
            if (tasks[t]->count[c] <= 0) continue;
            const float *mu = tasks[t]->mean + (size_t)c * D;
            memcpy(r->mean + (size_t)ci * D, mu, (size_t)D * sizeof *mu);
            cblas_sgemv(CblasRowMajor, CblasNoTrans, D, D, 1.0f, r->P, D, mu, 1, 0.0f, Pm, 1);
            r->half[ci] = -0.5 * (double)cblas_sdot(D, mu, 1, Pm, 1);
            r->log_prior[ci] = log_prior;
            r->cls_task[ci++] = t;
        }
    }
    free(Pm);
    return r;
}

void task_router_destroy(task_router *r)
{
    if (!r) return;
    free(r->cls_task);
    free(r->mean);
    free(r->half);
    free(r->log_prior);
    free(r->P);
    free(r);
}

int task_router_dim(const task_router *r) { return r->dim; }

size_t task_router_bytes(const task_router *r)
{
    return sizeof *r + (size_t)r->n_classes * (sizeof(int) + 2 * sizeof(double) + sizeof(float) * (size_t)r->dim) +
           (size_t)r->dim * r->dim * sizeof(float);
}

size_t task_router_scratch_floats(const task_router *r, int n) { return (size_t)n * ((size_t)r->dim + r->n_classes); }

void task_router_score(const task_router *r, const float *feat, int n, float *task_prob, float *distance, float *scratch)
{
    int D = r->dim, C = r->n_classes, T = r->n_tasks;
    float *Y = scratch, *G = scratch + (size_t)n * D;
    /* Y = F P (P symmetric), G = Y M^T: mu_c^T P f for every class at once. */
    cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, n, D, 1.0f, r->P, D, feat, D, 0.0f, Y, D);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, D, 1.0f, Y, D, r->mean, D, 0.0f, G, C);
    for (int i = 0; i < n; i++) {
        const float *g = G + (size_t)i * C;
        double fpf = cblas_sdot(D, feat + (size_t)i * D, 1, Y + (size_t)i * D, 1), best_d2 = INFINITY, top = -INFINITY;
        for (int c = 0; c < C; c++) {
            /* D^2 = f^T P f - 2 mu^T P f + mu^T P mu; the discriminant adds the prior. */
            double d2 = fpf - 2.0 * (double)g[c] - 2.0 * r->half[c];
            if (d2 < best_d2) best_d2 = d2;
            double lg = (double)g[c] + r->half[c] + r->log_prior[c];
            if (lg > top) top = lg;
        }
        if (distance) distance[i] = (float)sqrt(fmax(best_d2, 0.0) / D);
        if (!task_prob) continue;
        float *p = task_prob + (size_t)i * T;
        memset(p, 0, (size_t)T * sizeof *p);
        double z = 0;
        for (int c = 0; c < C; c++) z += exp((double)g[c] + r->half[c] + r->log_prior[c] - top);
        for (int c = 0; c < C; c++)
            p[r->cls_task[c]] += (float)(exp((double)g[c] + r->half[c] + r->log_prior[c] - top) / z);
    }
}
