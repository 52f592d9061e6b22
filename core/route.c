/* Routing statistics and the shared-covariance (LDA) task_router; see route.h. */
#include "core/route.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

#define ROUTE_BATCH 256

struct task_router {
    int dim, n_tasks, n_classes;  /* classes with samples, over all tasks */
    int n_prec;                   /* 1: one shared precision (pool = 1); else one per task */
    int *cls_task;                /* (C) task of each class; a task's classes are contiguous */
    int *first;                   /* (T+1) first class of each task */
    float *mean;                  /* (C,dim) whitened means W mu (under the class's covariance) */
    double *half;                 /* (C) -|W mu|^2 / 2 */
    double *log_prior;            /* (C) -log(T K_t) - log det(Sigma) / 2 */
    float *W;                     /* (n_prec,dim,dim) whitenings of the shrunk covariances (lower triangular) */
};

int route_stats_init(route_stats *rs, int dim, int n_classes, int n_comp, clad_err *err)
{
    memset(rs, 0, sizeof *rs);
    if (dim < 1 || dim > DATASET_MAX_DIM || n_classes < 1 || n_classes > MODEL_MAX_CLASSES || n_comp < 0 ||
        n_comp > n_classes * ROUTE_MAX_COMPONENTS)
        return clad_err_set(err, CLAD_EINVAL, "routing: %d features, %d classes and %d components are out of range",
                            dim, n_classes, n_comp);
    rs->dim = dim;
    rs->n_classes = n_classes;
    rs->n_comp = n_comp;
    rs->count = calloc((size_t)n_classes, sizeof *rs->count);
    rs->comp_class = calloc((size_t)n_comp + 1, sizeof *rs->comp_class);
    rs->comp_count = calloc((size_t)n_comp + 1, sizeof *rs->comp_count);
    rs->mean = calloc((size_t)(n_comp + 1) * dim, sizeof *rs->mean);
    rs->scatter = calloc((size_t)dim * dim, sizeof *rs->scatter);
    if (!rs->count || !rs->comp_class || !rs->comp_count || !rs->mean || !rs->scatter) {
        route_stats_finish(rs);
        return clad_err_set(err, CLAD_ENOMEM, "routing: out of memory for %d features", dim);
    }
    return 0;
}

void route_stats_finish(route_stats *rs)
{
    if (!rs) return;
    free(rs->count);
    free(rs->comp_class);
    free(rs->comp_count);
    free(rs->mean);
    free(rs->scatter);
    memset(rs, 0, sizeof *rs);
}

size_t route_stats_bytes(const route_stats *rs)
{
    size_t d = (size_t)rs->dim, K = (size_t)rs->n_classes, M = (size_t)rs->n_comp;
    return (K + 2 * M + M * d + d * (d + 1) / 2) * sizeof(float);
}

int route_stats_seen(const route_stats *rs)
{
    int n = 0;
    for (int c = 0; c < rs->n_classes; c++) n += rs->count[c] > 0;
    return n;
}

int route_feature_dim(const model *m) { return model_depth_features_dim(m); }

void route_base_features(float *feat, model_ws *ws, const model *base, const float *x, int n)
{
    int B = model_ws_max_batch(ws), D = route_feature_dim(base), in = model_config_input_dim(&base->cfg);
    for (int s = 0; s < n; s += B) {
        int k = n - s < B ? n - s : B;
        model_forward(ws, base, NULL, x + (size_t)s * in, NULL, k);
        model_ws_depth_features(ws, feat + (size_t)s * D);
    }
}

/* One Lloyd step over the live centres: assign every row of X (n,D) to its nearest (argmin ||c||^2 - 2 x.c),
 * then move each live centre to the mean of its rows; cnt (k) gets the row counts. */
static void kmeans_step(float *centre, int *assign, long *cnt, const float *X, int n, int D, int k, const bool *alive,
                        float *dot, double *acc)
{
    float cn[ROUTE_MAX_COMPONENTS];
    for (int j = 0; j < k; j++) cn[j] = cblas_sdot(D, centre + (size_t)j * D, 1, centre + (size_t)j * D, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, k, D, 1.0f, X, D, centre, D, 0.0f, dot, k);
    memset(acc, 0, (size_t)k * D * sizeof *acc);
    memset(cnt, 0, (size_t)k * sizeof *cnt);
    for (int i = 0; i < n; i++) {
        int b = -1;
        for (int j = 0; j < k; j++)
            if (alive[j] && (b < 0 || cn[j] - 2 * dot[(size_t)i * k + j] < cn[b] - 2 * dot[(size_t)i * k + b])) b = j;
        assign[i] = b;
        cnt[b]++;
        for (int e = 0; e < D; e++) acc[(size_t)b * D + e] += (double)X[(size_t)i * D + e];
    }
    for (int j = 0; j < k; j++)
        for (int e = 0; alive[j] && cnt[j] && e < D; e++) centre[(size_t)j * D + e] = (float)(acc[(size_t)j * D + e] / (double)cnt[j]);
}

/* k-means of the rows X (n,D) into at most k centres, each the mean of at least min_rows rows: k-means++
 * seeding (deterministic in seed) and 20 Lloyd steps; then, while a centre has fewer rows, the smallest is
 * dropped and its rows reassigned. Returns the centres kept (compacted at the front of centre); assign (n)
 * gets each row's centre. */
static int kmeans(float *centre, int *assign, const float *X, int n, int D, int k, int min_rows, uint64_t seed)
{
    if (k > n / min_rows) k = n / min_rows;
    if (k < 1) k = 1;
    float *dot = malloc((size_t)n * k * sizeof *dot);
    double *d2 = malloc((size_t)n * sizeof *d2), *acc = malloc((size_t)k * D * sizeof *acc);
    long cnt[ROUTE_MAX_COMPONENTS];
    bool alive[ROUTE_MAX_COMPONENTS];
    if (!dot || !d2 || !acc) abort(); /* sized by the task's data, which is in memory */
    rng g;
    rng_init(&g, seed);
    memcpy(centre, X + (size_t)(rng_next(&g) % (uint64_t)n) * D, (size_t)D * sizeof *centre);
    for (int i = 0; i < n; i++) d2[i] = INFINITY;
    for (int c = 1; c < k; c++) {
        /* The next seed with probability proportional to the squared distance to the nearest seed. */
        double total = 0;
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int e = 0; e < D; e++) {
                double t = (double)X[(size_t)i * D + e] - (double)centre[(size_t)(c - 1) * D + e];
                s += t * t;
            }
            if (s < d2[i]) d2[i] = s;
            total += d2[i];
        }
        double r = (double)rng_uniform(&g) * total;
        int pick = n - 1;
        for (int i = 0; i < n; i++)
            if ((r -= d2[i]) <= 0) {
                pick = i;
                break;
            }
        memcpy(centre + (size_t)c * D, X + (size_t)pick * D, (size_t)D * sizeof *centre);
    }
    for (int j = 0; j < k; j++) alive[j] = true;
    for (int it = 0; it < 20; it++) kmeans_step(centre, assign, cnt, X, n, D, k, alive, dot, acc);
    for (;;) {
        int small = -1;
        for (int j = 0; j < k; j++)
            if (alive[j] && cnt[j] < min_rows && (small < 0 || cnt[j] < cnt[small])) small = j;
        if (small < 0) break;
        alive[small] = false;
        kmeans_step(centre, assign, cnt, X, n, D, k, alive, dot, acc);
    }
    int map_to[ROUTE_MAX_COMPONENTS], kept = 0;
    for (int j = 0; j < k; j++) {
        map_to[j] = -1;
        if (!alive[j]) continue;
        if (kept != j) memcpy(centre + (size_t)kept * D, centre + (size_t)j * D, (size_t)D * sizeof *centre);
        map_to[j] = kept++;
    }
    for (int i = 0; i < n; i++) assign[i] = map_to[assign[i]];
    free(dot);
    free(d2);
    free(acc);
    return kept;
}

int route_stats_compute(route_stats *rs, const model *base, const dataset *d, int n_classes, int components,
                        clad_err *err)
{
    memset(rs, 0, sizeof *rs);
    if (components < 1 || components > ROUTE_MAX_COMPONENTS)
        return clad_err_set(err, CLAD_EINVAL, "routing: %d components per class (1 to %d)", components, ROUTE_MAX_COMPONENTS);
    if (n_classes < 1 || n_classes > MODEL_MAX_CLASSES)
        return clad_err_set(err, CLAD_EINVAL, "routing: %d classes", n_classes);
    int D = route_feature_dim(base), rc = 0, M = 0;
    /* The features are held only for this call. Components are sub-clusters of each class (k-means); the
     * scatter is taken around the component means in a second pass, in double. */
    float *feat = malloc((size_t)d->n * D * sizeof *feat), *cen = malloc((size_t)ROUTE_BATCH * D * sizeof *cen);
    float *part = malloc((size_t)D * D * sizeof *part), *Xc = malloc((size_t)d->n * D * sizeof *Xc);
    float *centres = malloc((size_t)n_classes * components * D * sizeof *centres);
    int *comp_of = malloc((size_t)d->n * sizeof *comp_of), *rows = malloc((size_t)d->n * sizeof *rows);
    int *assign = malloc((size_t)d->n * sizeof *assign), *cls = malloc((size_t)n_classes * components * sizeof *cls);
    long *ccount = calloc((size_t)n_classes * components, sizeof *ccount);
    double *S = calloc((size_t)D * D, sizeof *S);
    model_ws *ws = NULL;
    if (!feat || !cen || !part || !Xc || !centres || !comp_of || !rows || !assign || !cls || !ccount || !S) {
        rc = clad_err_set(err, CLAD_ENOMEM, "routing: out of memory for the features of %d samples", d->n);
        goto done;
    }
    if (!(ws = model_ws_create_for(base, NULL, ROUTE_BATCH, false, err))) {
        rc = err ? err->code : CLAD_ENOMEM;
        goto done;
    }
    route_base_features(feat, ws, base, d->x, d->n);
    for (int i = 0; i < d->n; i++) comp_of[i] = -1;
    for (int c = 0; c < n_classes; c++) {
        int n = 0;
        for (int i = 0; i < d->n; i++)
            if (d->y[i] == c) rows[n++] = i;
        if (n < ROUTE_MIN_CLASS_SAMPLES) continue;
        for (int i = 0; i < n; i++) memcpy(Xc + (size_t)i * D, feat + (size_t)rows[i] * D, (size_t)D * sizeof *Xc);
        int k = kmeans(centres + (size_t)M * D, assign, Xc, n, D, components, ROUTE_MIN_CLASS_SAMPLES,
                       0x9e3779b97f4a7c15ULL ^ (uint64_t)c);
        for (int i = 0; i < n; i++) {
            comp_of[rows[i]] = M + assign[i];
            ccount[M + assign[i]]++;
        }
        for (int j = 0; j < k; j++) cls[M + j] = c;
        M += k;
    }
    if (!M) {
        rc = clad_err_set(err, CLAD_EINVAL, "routing: no class has %d or more samples", ROUTE_MIN_CLASS_SAMPLES);
        goto done;
    }
    if ((rc = route_stats_init(rs, D, n_classes, M, err))) goto done;
    for (int j = 0; j < M; j++) {
        rs->comp_class[j] = cls[j];
        rs->comp_count[j] = (float)ccount[j];
        rs->count[cls[j]] += (float)ccount[j];
        /* Recomputed in double from the rows: the k-means centres are float sums. */
        double *acc = calloc((size_t)D, sizeof *acc);
        if (!acc) abort();
        for (int i = 0; i < d->n; i++)
            if (comp_of[i] == j)
                for (int e = 0; e < D; e++) acc[e] += (double)feat[(size_t)i * D + e];
        for (int e = 0; e < D; e++) rs->mean[(size_t)j * D + e] = (float)(acc[e] / (double)ccount[j]);
        free(acc);
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
        int j = comp_of[i];
        if (j < 0) continue;
        for (int e = 0; e < D; e++) cen[(size_t)b * D + e] = feat[(size_t)i * D + e] - rs->mean[(size_t)j * D + e];
        b++;
    }
    for (int r = 0; r < D; r++)
        for (int k = r; k < D; k++) rs->scatter[(size_t)r * D + k] = rs->scatter[(size_t)k * D + r] = (float)S[(size_t)r * D + k];
done:
    model_ws_destroy(ws);
    free(feat);
    free(cen);
    free(part);
    free(Xc);
    free(centres);
    free(comp_of);
    free(rows);
    free(assign);
    free(cls);
    free(ccount);
    free(S);
    if (rc) route_stats_finish(rs);
    return rc;
}

/* The inverse Linv (n,n, lower triangular) of the Cholesky factor of A = L L^T (symmetric positive
 * definite, left unchanged), so that A^-1 = Linv^T Linv; *logdet gets log det A. False if A is not positive
 * definite. */
static bool cholesky_inverse(double *Linv, const double *A, int n, double *logdet)
{
    double *L = calloc((size_t)n * n, sizeof *L);
    if (!L) abort(); /* the size of the router being built */
    memset(Linv, 0, (size_t)n * n * sizeof *Linv);
    bool ok = true;
    *logdet = 0;
    for (int j = 0; ok && j < n; j++) {
        double s = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) s -= L[(size_t)j * n + k] * L[(size_t)j * n + k];
        if (!(s > 0)) ok = false;
        else L[(size_t)j * n + j] = sqrt(s), *logdet += log(s);
        for (int i = j + 1; ok && i < n; i++) {
            double t = A[(size_t)i * n + j];
            for (int k = 0; k < j; k++) t -= L[(size_t)i * n + k] * L[(size_t)j * n + k];
            L[(size_t)i * n + j] = t / L[(size_t)j * n + j];
        }
    }
    for (int j = 0; ok && j < n; j++) {
        Linv[(size_t)j * n + j] = 1.0 / L[(size_t)j * n + j];
        for (int i = j + 1; i < n; i++) {
            double t = 0;
            for (int k = j; k < i; k++) t += L[(size_t)i * n + k] * Linv[(size_t)k * n + j];
            Linv[(size_t)i * n + j] = -t / L[(size_t)i * n + i];
        }
    }
    free(L);
    return ok;
}

void route_config_default(route_config *c)
{
    c->shrink = ROUTE_SHRINK;
    c->pool = ROUTE_POOL;
}

/* Samples minus components: the degrees of freedom of a task's within-component scatter. */
static double task_dof(const route_stats *rs)
{
    double n = 0;
    for (int j = 0; j < rs->n_comp; j++) n += (double)rs->comp_count[j];
    return n - rs->n_comp;
}

/* Sigma = (1 - g) S / n + g (tr / d) I of scatter S (double, overwritten) with n degrees of freedom, as its
 * whitening W (float, lower triangular: Sigma^-1 = W^T W); *logdet gets log det Sigma. */
static bool shrunk_whitening(float *W, double *S, double n, int D, double g, double *logdet)
{
    double tr = 0;
    for (int k = 0; k < D; k++) tr += S[(size_t)k * D + k] / n;
    double target = tr > 0 ? tr / D : 1e-12;
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) S[(size_t)a * D + b] = (1 - g) * S[(size_t)a * D + b] / n + (a == b ? g * target : 0.0);
    double *Li = malloc((size_t)D * D * sizeof *Li);
    if (!Li) abort(); /* the size of the router being built */
    bool ok = cholesky_inverse(Li, S, D, logdet);
    for (size_t k = 0; ok && k < (size_t)D * D; k++) W[k] = (float)Li[k];
    free(Li);
    return ok;
}

task_router *task_router_create(const route_stats *const *tasks, int n_tasks, const route_config *cfg,
                                clad_err *err)
{
    route_config def;
    if (!cfg) route_config_default(&def), cfg = &def;
    if (n_tasks < 1) {
        clad_err_set(err, CLAD_EINVAL, "routing: no task to route to");
        return NULL;
    }
    if (!(cfg->shrink >= 0 && cfg->shrink <= 1 && cfg->pool >= 0 && cfg->pool <= 1)) {
        clad_err_set(err, CLAD_EINVAL, "routing: shrinkage and pooling must be in [0, 1]");
        return NULL;
    }
    int D = tasks[0]->dim, C = 0;
    double n_eff = 0;
    for (int t = 0; t < n_tasks; t++) {
        if (tasks[t]->dim != D) {
            clad_err_set(err, CLAD_EINVAL, "routing: task %d has %d features, task 0 has %d", t, tasks[t]->dim, D);
            return NULL;
        }
        C += tasks[t]->n_comp;
        n_eff += task_dof(tasks[t]);
        if (cfg->pool < 1 && task_dof(tasks[t]) < 1) {
            clad_err_set(err, CLAD_EINVAL, "routing: task %d has too few samples for its own covariance", t);
            return NULL;
        }
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
    if (!r) abort();
    r->dim = D;
    r->n_tasks = n_tasks;
    r->n_classes = C;
    r->n_prec = cfg->pool >= 1 ? 1 : n_tasks;
    size_t DD = (size_t)D * D;
    r->cls_task = malloc((size_t)C * sizeof *r->cls_task);
    r->first = malloc((size_t)(n_tasks + 1) * sizeof *r->first);
    r->mean = malloc((size_t)C * D * sizeof *r->mean);
    r->half = malloc((size_t)C * sizeof *r->half);
    r->log_prior = malloc((size_t)C * sizeof *r->log_prior);
    r->W = malloc((size_t)r->n_prec * DD * sizeof *r->W);
    double *pooled = calloc(DD, sizeof *pooled), *A = malloc(DD * sizeof *A), *logdet = calloc((size_t)r->n_prec, sizeof *logdet);
    bool ok = r->cls_task && r->first && r->mean && r->half && r->log_prior && r->W && pooled && A && logdet;
    if (!ok) clad_err_set(err, CLAD_ENOMEM, "routing: out of memory for %d tasks of %d features", n_tasks, D);
    /* The pooled within-class covariance; with pool < 1 each task's own is blended in (regularised
     * discriminant analysis): Sigma_t = pool Sigma_pooled + (1 - pool) Sigma_task, then shrunk. */
    for (int t = 0; ok && t < n_tasks; t++)
        for (size_t k = 0; k < DD; k++) pooled[k] += (double)tasks[t]->scatter[k];
    for (int k = 0; ok && k < r->n_prec; k++) {
        if (r->n_prec == 1) {
            memcpy(A, pooled, DD * sizeof *A);
        } else {
            double nt = task_dof(tasks[k]);
            for (size_t e = 0; e < DD; e++)
                A[e] = n_eff * (cfg->pool * pooled[e] / n_eff + (1 - cfg->pool) * (double)tasks[k]->scatter[e] / nt);
        }
        if (!shrunk_whitening(r->W + (size_t)k * DD, A, n_eff, D, cfg->shrink, &logdet[k])) {
            clad_err_set(err, CLAD_EINVAL, "routing: a covariance is singular (raise the shrinkage)");
            ok = false;
        }
    }
    int ci = 0;
    for (int t = 0; ok && t < n_tasks; t++) {
        const float *W = r->W + (size_t)(r->n_prec == 1 ? 0 : t) * DD;
        double log_prior = -log((double)n_tasks * route_stats_seen(tasks[t])) - 0.5 * logdet[r->n_prec == 1 ? 0 : t];
        r->first[t] = ci;
        for (int j = 0; j < tasks[t]->n_comp; j++) {
            const route_stats *ts = tasks[t];
            const float *mu = ts->mean + (size_t)j * D;
            float *wm = r->mean + (size_t)ci * D;
            memcpy(wm, mu, (size_t)D * sizeof *mu);
            cblas_strmv(CblasRowMajor, CblasLower, CblasNoTrans, CblasNonUnit, D, W, D, wm, 1);
            r->half[ci] = -0.5 * (double)cblas_sdot(D, wm, 1, wm, 1);
            /* The component's share of its class. */
            r->log_prior[ci] = log_prior + log((double)ts->comp_count[j] / (double)ts->count[ts->comp_class[j]]);
            r->cls_task[ci++] = t;
        }
    }
    if (ok) r->first[n_tasks] = ci;
    free(pooled);
    free(A);
    free(logdet);
    if (!ok) {
        task_router_destroy(r);
        return NULL;
    }
    return r;
}

void task_router_destroy(task_router *r)
{
    if (!r) return;
    free(r->cls_task);
    free(r->first);
    free(r->mean);
    free(r->half);
    free(r->log_prior);
    free(r->W);
    free(r);
}

int task_router_dim(const task_router *r) { return r->dim; }

size_t task_router_bytes(const task_router *r)
{
    return sizeof *r + (size_t)r->n_classes * (2 * sizeof(int) + 2 * sizeof(double) + sizeof(float) * (size_t)r->dim) +
           (size_t)r->n_prec * r->dim * r->dim * sizeof(float);
}

size_t task_router_scratch_floats(const task_router *r, int n)
{
    return (size_t)n * ((size_t)r->dim + r->n_classes + r->n_prec);
}

void task_router_score(const task_router *r, const float *feat, int n, float *task_prob, float *distance,
                       float *scratch)
{
    int D = r->dim, C = r->n_classes, T = r->n_tasks;
    float *Y = scratch, *G = scratch + (size_t)n * D, *fpf = G + (size_t)n * C;
    /* Per covariance k: whitened inputs Y = F W_k^T, |W_k f|^2 = f^T P_k f, and (W_k mu_c).(W_k f) = mu_c^T P_k f
     * for its classes (all classes when shared). */
    for (int k = 0; k < r->n_prec; k++) {
        int c0 = r->n_prec == 1 ? 0 : r->first[k], nc = r->n_prec == 1 ? C : r->first[k + 1] - c0;
        memcpy(Y, feat, (size_t)n * D * sizeof *Y);
        cblas_strmm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, n, D, 1.0f, r->W + (size_t)k * D * D, D, Y, D);
        if (nc) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nc, D, 1.0f, Y, D, r->mean + (size_t)c0 * D, D, 0.0f,
                            G + c0, C);
        for (int i = 0; i < n; i++) fpf[(size_t)i * r->n_prec + k] = cblas_sdot(D, Y + (size_t)i * D, 1, Y + (size_t)i * D, 1);
    }
    for (int i = 0; i < n; i++) {
        const float *g = G + (size_t)i * C;
        double best_d2 = INFINITY, top = -INFINITY;
        /* D^2 = f^T P f - 2 mu^T P f + mu^T P mu; log density = -D^2 / 2 + log prior (with -log det / 2). */
        for (int c = 0; c < C; c++) {
            double f2 = fpf[(size_t)i * r->n_prec + (r->n_prec == 1 ? 0 : r->cls_task[c])];
            double d2 = f2 - 2.0 * (double)g[c] - 2.0 * r->half[c];
            if (d2 < best_d2) best_d2 = d2;
            double lg = -0.5 * d2 + r->log_prior[c];
            if (lg > top) top = lg;
        }
        if (distance) distance[i] = (float)sqrt(fmax(best_d2, 0.0) / D);
        if (!task_prob) continue;
        float *p = task_prob + (size_t)i * T;
        memset(p, 0, (size_t)T * sizeof *p);
        double z = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int c = 0; c < C; c++) {
                double f2 = fpf[(size_t)i * r->n_prec + (r->n_prec == 1 ? 0 : r->cls_task[c])];
                double e = exp(-0.5 * (f2 - 2.0 * (double)g[c] - 2.0 * r->half[c]) + r->log_prior[c] - top);
                if (!pass) z += e;
                else p[r->cls_task[c]] += (float)(e / z);
            }
    }
}
