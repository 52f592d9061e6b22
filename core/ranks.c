/* Distance, overlap, novelty and the rank rule; see ranks.h and docs/RANKS.md. */
#include "core/ranks.h"

#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/linalg.h"

/* ---- policies --------------------------------------------------------------------------------------- */

void rank_policy_default(rank_policy *p)
{
    memset(p, 0, sizeof *p);
    p->kind = RANK_AUTO;
    p->fixed = 8;
    p->r_min = 1;
    p->r_max = 32;
    p->theta = 0.004;
    p->scale = RANK_DEFAULT_SCALE;
    p->price = RANK_DEFAULT_PRICE;
    p->reuse_min = 0.5;
    p->left_min = 0.25;
    p->budget = 0;
    p->start = RANK_DEFAULT_START;
    p->cut = 0.5;
    p->keep = RANK_DEFAULT_KEEP;
    p->stable = 1;
    p->linear_gain = 100.0;
}

/* A policy setting: its key, its range (lo excluded when lo_open) and the field it sets. */
typedef enum { SET_INT, SET_LONG, SET_DOUBLE } setting_type;
typedef struct policy_setting {
    const char *key;
    double lo, hi;
    bool lo_open;
    setting_type type;   /* SET_INT and SET_LONG take whole numbers */
    size_t offset;
} policy_setting;

static const policy_setting settings[] = {
    {"r_min", 0, 4096, false, SET_INT, offsetof(rank_policy, r_min)},
    {"r_max", 1, 4096, false, SET_INT, offsetof(rank_policy, r_max)},
    {"theta", 0, 100, true, SET_DOUBLE, offsetof(rank_policy, theta)},
    {"scale", 0.1, 100, false, SET_DOUBLE, offsetof(rank_policy, scale)},
    {"price", 0, 1, false, SET_DOUBLE, offsetof(rank_policy, price)},
    {"reuse", 0, 2, false, SET_DOUBLE, offsetof(rank_policy, reuse_min)},
    {"left", 0, 1, false, SET_DOUBLE, offsetof(rank_policy, left_min)},
    {"budget", 0, 1e12, false, SET_LONG, offsetof(rank_policy, budget)},
    {"start", 0, 4096, false, SET_INT, offsetof(rank_policy, start)},
    {"cut", 0.05, 0.95, false, SET_DOUBLE, offsetof(rank_policy, cut)},
    {"keep", 0, 1, false, SET_DOUBLE, offsetof(rank_policy, keep)},
    {"stable", 0, 1, false, SET_INT, offsetof(rank_policy, stable)},
    {"gain", 0, 1e6, true, SET_DOUBLE, offsetof(rank_policy, linear_gain)},
};
#define N_SETTINGS (sizeof settings / sizeof *settings)

static int parse_setting(rank_policy *p, const char *kv, clad_err *err)
{
    const char *eq = strchr(kv, '=');
    if (!eq) return clad_err_set(err, CLAD_EINVAL, "policy setting '%s' is not key=value", kv);
    size_t klen = (size_t)(eq - kv);
    const policy_setting *st = NULL;
    for (size_t i = 0; i < N_SETTINGS && !st; i++)
        if (strlen(settings[i].key) == klen && !strncmp(kv, settings[i].key, klen)) st = &settings[i];
    if (!st) {
        char keys[160] = "";
        for (size_t i = 0; i < N_SETTINGS; i++)
            snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s", i ? ", " : "", settings[i].key);
        return clad_err_set(err, CLAD_EINVAL, "policy setting '%.*s' is unknown (%s)", (int)klen, kv, keys);
    }
    char *end = NULL;
    double v = strtod(eq + 1, &end);
    bool whole = st->type != SET_DOUBLE;
    if (end == eq + 1 || *end || !isfinite(v) || (st->lo_open ? v <= st->lo : v < st->lo) || v > st->hi ||
        (whole && v != floor(v)))
        return clad_err_set(err, CLAD_EINVAL, "policy setting '%s': %s is a %s in %c%g, %g]", kv, st->key,
                            whole ? "whole number" : "number", st->lo_open ? '(' : '[', st->lo, st->hi);
    char *field = (char *)p + st->offset;
    if (st->type == SET_INT) *(int *)field = (int)v;
    else if (st->type == SET_LONG) *(long *)field = (long)v;
    else *(double *)field = v;
    return 0;
}

int rank_policy_parse(rank_policy *p, const char *text, clad_err *err)
{
    rank_policy_default(p);
    char buf[256];
    if (!text || strlen(text) >= sizeof buf) return clad_err_set(err, CLAD_EINVAL, "policy text is missing or too long");
    snprintf(buf, sizeof buf, "%s", text);
    char *colon = strchr(buf, ':');
    char *rest = NULL;
    if (colon) {
        *colon = '\0';
        rest = colon + 1;
    }
    if (!strcmp(buf, "auto")) {
        p->kind = RANK_AUTO;
    } else if (!strcmp(buf, "linear")) {
        p->kind = RANK_LINEAR;
    } else if (!strcmp(buf, "fixed")) {
        p->kind = RANK_FIXED;
        char *end = NULL;
        long n = rest ? strtol(rest, &end, 10) : 0;
        if (!rest || end == rest || (*end && *end != ',') || n < 1 || n > 4096)
            return clad_err_set(err, CLAD_EINVAL, "policy 'fixed' needs a rank in [1, 4096], as in fixed:8");
        p->fixed = (int)n;
        rest = *end ? end + 1 : NULL;
    } else {
        return clad_err_set(err, CLAD_EINVAL, "unknown rank policy '%s' (auto, fixed:N, linear)", buf);
    }
    for (char *tok = rest ? strtok(rest, ",") : NULL; tok; tok = strtok(NULL, ","))
        if (parse_setting(p, tok, err)) return CLAD_EINVAL;
    if (p->r_min > p->r_max)
        return clad_err_set(err, CLAD_EINVAL, "policy: r_min %d is above r_max %d", p->r_min, p->r_max);
    return 0;
}

void rank_policy_name(const rank_policy *p, char *buf, size_t size)
{
    /* The policy's word, then every setting that differs from the default, so the text parses back to
     * the same policy. */
    rank_policy d;
    rank_policy_default(&d);
    int n;
    if (p->kind == RANK_FIXED) n = snprintf(buf, size, "fixed:%d", p->fixed);
    else n = snprintf(buf, size, "%s", p->kind == RANK_LINEAR ? "linear" : "auto");
    char sep = p->kind == RANK_FIXED ? ',' : ':';
#define ADD(cond, fmt, val)                                                                                \
    do {                                                                                                   \
        if ((cond) && n >= 0 && (size_t)n < size) {                                                        \
            n += snprintf(buf + n, size - (size_t)n, "%c" fmt, sep, val);                                  \
            sep = ',';                                                                                     \
        }                                                                                                  \
    } while (0)
    if (p->kind != RANK_FIXED) {
        ADD(p->r_min != d.r_min, "r_min=%d", p->r_min);
        ADD(p->r_max != d.r_max, "r_max=%d", p->r_max);
        ADD(p->budget != d.budget, "budget=%ld", p->budget);
    }
    if (p->kind == RANK_AUTO) {
        ADD(p->theta != d.theta, "theta=%g", p->theta);
        ADD(p->scale != d.scale, "scale=%g", p->scale);
        ADD(p->price != d.price, "price=%g", p->price);
        ADD(p->reuse_min != d.reuse_min, "reuse=%g", p->reuse_min);
        ADD(p->left_min != d.left_min, "left=%g", p->left_min);
        ADD(p->start != d.start, "start=%d", p->start);
        ADD(p->cut != d.cut, "cut=%g", p->cut);
        ADD(p->keep != d.keep, "keep=%g", p->keep);
        ADD(p->stable != d.stable, "stable=%d", p->stable);
    }
    if (p->kind == RANK_LINEAR) ADD(p->linear_gain != d.linear_gain, "gain=%g", p->linear_gain);
#undef ADD
}

/* ---- components ------------------------------------------------------------------------------------- */

bool rank_linear_is_candidate(const model *m, int li)
{
    return li >= 0 && li < m->n_linear && !m->linear[li].is_head;
}

void rank_input_from_probe(rank_input *in, const model *m, const probe_result *pr)
{
    memset(in, 0, sizeof *in);
    in->n_linear = m->n_linear;
    for (int li = 0; li < m->n_linear; li++) {
        rank_input_layer *L = &in->layer[li];
        L->name = m->linear[li].name;
        L->out = m->linear[li].out;
        L->in = m->linear[li].in;
        L->pull = pr->target[li] ? pr->delta[li] : NULL;
        L->grad = pr->target[li] ? pr->grad[li] : NULL;
        L->w_norm2 = pr->w_norm2[li];
    }
}

int rank_components(float *U, float *s, float *Vt, double *gain, const float *X, const float *G, int m, int n,
                    clad_err *err)
{
    int k = m < n ? m : n;
    int rc = linalg_svd(U, s, Vt, X, m, n, err);
    if (rc) return rc;
    if (!G) {
        for (int i = 0; i < k; i++) gain[i] = 0.0;
        return 0;
    }
    /* GV (m,k) = G Vt^T; gain_i = -s_i sum_r U[r][i] GV[r][i]. */
    float *GV = malloc((size_t)m * (size_t)k * sizeof *GV);
    if (!GV) return clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, n, 1.0f, G, n, Vt, n, 0.0f, GV, k);
    for (int i = 0; i < k; i++) {
        double d = 0.0;
        for (int r = 0; r < m; r++) d += (double)U[(size_t)r * k + i] * (double)GV[(size_t)r * k + i];
        gain[i] = -(double)s[i] * d;
    }
    free(GV);
    return 0;
}

int rank_count_directions(const double *gain, int k, double theta)
{
    int c = 0;
    for (int i = 0; i < k; i++) c += gain[i] >= theta;
    return c;
}

/* frac[i] = |B^T x_i|^2 for the k columns x_i of X (m,k) (row stride k) and a basis B (m,p) (stride p). */
static void basis_fractions(double *frac, const float *X, int m, int k, const float *B, int p)
{
    for (int i = 0; i < k; i++) frac[i] = 0.0;
    if (p < 1) return;
    float *C = malloc((size_t)p * (size_t)k * sizeof *C);
    if (!C) abort(); /* p, k <= layer sizes: small */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p, k, m, 1.0f, B, p, X, k, 0.0f, C, k);
    for (int j = 0; j < p; j++)
        for (int i = 0; i < k; i++) frac[i] += (double)C[(size_t)j * k + i] * (double)C[(size_t)j * k + i];
    free(C);
}

/* Transposes X (r,c) into Y (c,r). */
static void transpose(float *Y, const float *X, int r, int c)
{
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) Y[(size_t)j * r + i] = X[(size_t)i * c + j];
}

/* ---- the plan --------------------------------------------------------------------------------------- */

static int cmp_asc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

double rank_floor(const double *gain, int k, double theta)
{
    /* Noise earns as often a little less than 0 as a little more, so the losses measure it: their median
     * magnitude is 0.67 sigma for Gaussian noise, and RANK_FLOOR_MEDIANS of it is ~2.7 sigma, above what
     * pure noise reaches in a layer of a few hundred components but far below real directions. The median
     * (not the worst loss) because a few directions that truly hurt (the probe's own overfitting) are not
     * noise and must not raise the bar for the others. */
    double *neg = malloc(((size_t)k + 1) * sizeof *neg);
    if (!neg) abort(); /* k is a layer size: small */
    int n = 0;
    for (int i = 0; i < k; i++)
        if (gain[i] < 0.0) neg[n++] = -gain[i];
    double f = theta;
    if (n) {
        qsort(neg, (size_t)n, sizeof *neg, cmp_asc);
        double med = n % 2 ? neg[n / 2] : 0.5 * (neg[n / 2 - 1] + neg[n / 2]);
        if (RANK_FLOOR_MEDIANS * med > f) f = RANK_FLOOR_MEDIANS * med;
    }
    free(neg);
    return f;
}

void rank_plan_finish(rank_plan *plan)
{
    if (!plan) return;
    for (int li = 0; li < MODEL_MAX_LINEARS; li++) {
        free(plan->layer[li].overlap);
        free(plan->layer[li].pull_U);
        free(plan->layer[li].pull_Vt);
        free(plan->layer[li].pull_gain);
        free(plan->layer[li].pull_s);
        plan->layer[li].pull_s = NULL;
        plan->layer[li].overlap = NULL;
        plan->layer[li].pull_U = plan->layer[li].pull_Vt = NULL;
        plan->layer[li].pull_gain = NULL;
    }
    free(plan->overlap);
    free(plan->overlap_num);
    free(plan->overlap_den);
    plan->overlap = plan->overlap_num = plan->overlap_den = NULL;
}

static int check_signature(const signature *sig, const rank_input *in, int t, clad_err *err)
{
    if (!sig || sig->n_linear != in->n_linear)
        return clad_err_set(err, CLAD_EINVAL, "ranks: earlier task %d's signature is for another model", t);
    for (int li = 0; li < in->n_linear; li++) {
        const sig_layer *S = &sig->layer[li];
        if ((S->k || S->kp) && (S->out != in->layer[li].out || S->in != in->layer[li].in))
            return clad_err_set(err, CLAD_EINVAL, "ranks: earlier task %d's signature of layer '%s' is %dx%d, "
                                "the model's is %dx%d", t, in->layer[li].name, S->out, S->in, in->layer[li].out,
                                in->layer[li].in);
    }
    return 0;
}

/* An orthonormal basis pair spanning the footprints of layer li of the given earlier tasks (the adapter's
 * change and the pull of each): Uf (out, *pu) and Vf (in, *pv), columns. */
static int footprint(float **Uf, int *pu, float **Vf, int *pv, const signature *const *tasks, int n, int li, int out,
                     int in, clad_err *err)
{
    *Uf = *Vf = NULL;
    *pu = *pv = 0;
    int K = 0;
    for (int t = 0; t < n; t++) K += tasks[t]->layer[li].k + tasks[t]->layer[li].kp;
    if (!K) return 0;
    float *CU = malloc((size_t)out * K * sizeof *CU), *CV = malloc((size_t)in * K * sizeof *CV);
    *Uf = malloc((size_t)out * (size_t)(K < out ? K : out) * sizeof **Uf);
    *Vf = malloc((size_t)in * (size_t)(K < in ? K : in) * sizeof **Vf);
    int rc = 0;
    if (!CU || !CV || !*Uf || !*Vf) {
        rc = clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
        goto cleanup;
    }
    int col = 0;
    for (int t = 0; t < n; t++) {
        const sig_layer *S = &tasks[t]->layer[li];
        for (int j = 0; j < S->k; j++, col++) {
            for (int r = 0; r < out; r++) CU[(size_t)r * K + col] = S->U[(size_t)r * S->k + j];
            for (int r = 0; r < in; r++) CV[(size_t)r * K + col] = S->Vt[(size_t)j * in + r];
        }
        for (int j = 0; j < S->kp; j++, col++) {
            for (int r = 0; r < out; r++) CU[(size_t)r * K + col] = S->Up[(size_t)r * S->kp + j];
            for (int r = 0; r < in; r++) CV[(size_t)r * K + col] = S->Vtp[(size_t)j * in + r];
        }
    }
    if ((rc = linalg_orth(*Uf, pu, CU, out, K, 1e-4f, err))) goto cleanup;
    rc = linalg_orth(*Vf, pv, CV, in, K, 1e-4f, err);
cleanup:
    free(CU);
    free(CV);
    if (rc) {
        free(*Uf);
        free(*Vf);
        *Uf = *Vf = NULL;
    }
    return rc;
}

typedef struct layer_work {
    int k;
    float *U, *s, *Vt;
    double *gain;          /* (k) of the pull's components */
    double *novel_gain;    /* (k) of the components of the part left to learn, sorted descending */
} layer_work;

static void work_finish(layer_work *w)
{
    free(w->U);
    free(w->s);
    free(w->Vt);
    free(w->gain);
    free(w->novel_gain);
    memset(w, 0, sizeof *w);
}

static int work_alloc(layer_work *w, int m, int n, clad_err *err)
{
    w->k = m < n ? m : n;
    w->U = malloc((size_t)m * w->k * sizeof *w->U);
    w->s = malloc((size_t)w->k * sizeof *w->s);
    w->Vt = malloc((size_t)w->k * n * sizeof *w->Vt);
    w->gain = malloc((size_t)w->k * sizeof *w->gain);
    w->novel_gain = malloc((size_t)w->k * sizeof *w->novel_gain);
    if (!w->U || !w->s || !w->Vt || !w->gain || !w->novel_gain)
        return clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
    return 0;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Share of the useful pull (significant components, weighted by what they earn) inside a footprint. */
static double useful_share(const layer_work *w, const rank_input_layer *L, double floor, double useful,
                           const float *Uf, int pu, const float *Vf, int pv)
{
    if (!(useful > 0.0) || pu < 1 || pv < 1) return 0.0;
    int k = w->k;
    double *fu = malloc((size_t)k * sizeof *fu), *fv = malloc((size_t)k * sizeof *fv);
    float *V = malloc((size_t)L->in * k * sizeof *V);
    if (!fu || !fv || !V) abort(); /* layer-sized: small */
    transpose(V, w->Vt, k, L->in);
    basis_fractions(fu, w->U, L->out, k, Uf, pu);
    basis_fractions(fv, V, L->in, k, Vf, pv);
    double s = 0.0;
    for (int i = 0; i < k; i++)
        if (w->gain[i] >= floor) s += w->gain[i] * fu[i] * fv[i];
    free(fu);
    free(fv);
    free(V);
    return s / useful;
}

/* Gain j of an earlier task's pull: 1 for a signature stored without gains (a reader that predates them), so
 * the similarity still compares directions, unweighted. */
static double pull_weight(const sig_layer *S, int j) { return S->gp ? (double)S->gp[j] : 1.0; }

/* <S_new, S_t> for one layer: sum_ij c_i g_j (u_i . u'_j)(v_i . v'_j) over the new pull's kept components and
 * t's (the kept components of both are orthonormal singular vectors). */
static double pull_dot(const rank_layer *R, const sig_layer *S, int out, int in)
{
    int a = R->pull_k, b = S->kp;
    if (a < 1 || b < 1) return 0.0;
    float *UU = malloc((size_t)a * b * sizeof *UU), *VV = malloc((size_t)a * b * sizeof *VV);
    if (!UU || !VV) abort(); /* layer-sized: small */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, a, b, out, 1.0f, R->pull_U, a, S->Up, b, 0.0f, UU, b);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a, b, in, 1.0f, R->pull_Vt, in, S->Vtp, in, 0.0f, VV, b);
    double d = 0.0;
    for (int i = 0; i < a; i++)
        for (int j = 0; j < b; j++)
            d += R->pull_gain[i] * pull_weight(S, j) * (double)UU[(size_t)i * b + j] * (double)VV[(size_t)i * b + j];
    free(UU);
    free(VV);
    return d;
}

static double sum_sq(const double *x, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    return s;
}

static double pull_sum_sq(const sig_layer *S)
{
    double s = 0.0;
    for (int j = 0; j < S->kp; j++) s += pull_weight(S, j) * pull_weight(S, j);
    return s;
}

/* Overlaps with each earlier task (accumulating the pooled sums in plan) and novelty against all of them,
 * for one layer. */
static int layer_overlaps(rank_plan *plan, rank_layer *R, const layer_work *w, const rank_input_layer *L,
                          const signature *const *earlier, int n_earlier, int li, clad_err *err)
{
    double own = sum_sq(R->pull_gain, R->pull_k);
    for (int t = 0; t < n_earlier; t++) {
        const sig_layer *S = &earlier[t]->layer[li];
        double d = pull_dot(R, S, L->out, L->in), theirs = pull_sum_sq(S);
        R->overlap[t] = own > 0.0 && theirs > 0.0 && d > 0.0 ? d / sqrt(own * theirs) : 0.0;
        plan->overlap_num[t] += d;
        plan->overlap_den[t] += theirs;
    }
    float *Uf = NULL, *Vf = NULL;
    int pu = 0, pv = 0;
    int rc = footprint(&Uf, &pu, &Vf, &pv, earlier, n_earlier, li, L->out, L->in, err);
    if (!rc) {
        R->novelty = R->useful > 0.0 ? 1.0 - useful_share(w, L, R->floor, R->useful, Uf, pu, Vf, pv) : 1.0;
        if (R->novelty < 0.0) R->novelty = 0.0;
    }
    free(Uf);
    free(Vf);
    return rc;
}

/* Keeps the significant components of the pull (largest gain first) for the task's signature. */
static int keep_pull(rank_layer *R, const layer_work *w, const rank_input_layer *L, clad_err *err)
{
    int k = w->k, n = 0;
    int *order = malloc((size_t)k * sizeof *order);
    if (!order) return clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
    for (int i = 0; i < k; i++)
        if (w->gain[i] >= R->floor) order[n++] = i;
    for (int a = 1; a < n; a++) /* insertion sort by gain, descending: n is small */
        for (int b = a; b > 0 && w->gain[order[b]] > w->gain[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    R->pull_k = n;
    if (n) {
        R->pull_U = malloc((size_t)L->out * n * sizeof *R->pull_U);
        R->pull_Vt = malloc((size_t)n * L->in * sizeof *R->pull_Vt);
        R->pull_gain = malloc((size_t)n * sizeof *R->pull_gain);
        R->pull_s = malloc((size_t)n * sizeof *R->pull_s);
        if (!R->pull_U || !R->pull_Vt || !R->pull_gain || !R->pull_s) {
            free(order);
            return clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
        }
        for (int j = 0; j < n; j++) {
            for (int r = 0; r < L->out; r++) R->pull_U[(size_t)r * n + j] = w->U[(size_t)r * k + order[j]];
            memcpy(R->pull_Vt + (size_t)j * L->in, w->Vt + (size_t)order[j] * L->in, (size_t)L->in * sizeof(float));
            R->pull_gain[j] = w->gain[order[j]];
            R->pull_s[j] = w->s[order[j]];
        }
    }
    free(order);
    return 0;
}

/* The gains of the components of the part of the pull left to learn (outside the reused task's footprint),
 * sorted descending, and the share of a random change that would be left (1 without reuse). */
static int novel_gains(layer_work *w, double *chance_left, const rank_input_layer *L, const signature *reused,
                       int li, clad_err *err)
{
    float *Uf = NULL, *Vf = NULL;
    int pu = 0, pv = 0, rc = 0;
    if (reused && (rc = footprint(&Uf, &pu, &Vf, &pv, &reused, 1, li, L->out, L->in, err))) return rc;
    /* A random change has (pu / out)(pv / in) of its energy inside the footprint on average: in a small layer
     * that a reused change spans almost entirely, little is left of any pull, needed or not. */
    *chance_left = 1.0 - ((double)pu / L->out) * ((double)pv / L->in);
    if (pu < 1 || pv < 1) {
        memcpy(w->novel_gain, w->gain, (size_t)w->k * sizeof *w->gain);
    } else {
        size_t n = (size_t)L->out * (size_t)L->in;
        float *N = malloc(n * sizeof *N), *U = malloc((size_t)L->out * w->k * sizeof *U);
        float *s = malloc((size_t)w->k * sizeof *s), *Vt = malloc((size_t)w->k * L->in * sizeof *Vt);
        float *Vft = malloc((size_t)pv * L->in * sizeof *Vft);
        if (!N || !U || !s || !Vt || !Vft) rc = clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
        if (!rc) {
            transpose(Vft, Vf, L->in, pv);
            linalg_project_out(N, L->pull, L->out, L->in, Uf, pu, Vft, pv);
            rc = rank_components(U, s, Vt, w->novel_gain, N, L->grad, L->out, L->in, err);
        }
        free(N);
        free(U);
        free(s);
        free(Vt);
        free(Vft);
    }
    free(Uf);
    free(Vf);
    if (rc) return rc;
    qsort(w->novel_gain, (size_t)w->k, sizeof *w->novel_gain, cmp_desc);
    return 0;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static long layer_cost(const rank_input_layer *L) { return (long)L->out + (long)L->in; }

int rank_plan_compute(rank_plan *plan, const rank_input *in, const signature *const *earlier, int n_earlier,
                      const rank_policy *pol, clad_err *err)
{
    memset(plan, 0, sizeof *plan);
    plan->n_linear = in->n_linear;
    plan->n_earlier = n_earlier;
    plan->reuse = -1;
    if (n_earlier < 0) return clad_err_set(err, CLAD_EINVAL, "ranks: negative number of earlier tasks");
    int rc = 0, n_targets = 0;
    for (int li = 0; li < in->n_linear; li++) n_targets += in->layer[li].pull != NULL;
    if (!n_targets) return clad_err_set(err, CLAD_EINVAL, "ranks: no target layer");
    for (int t = 0; t < n_earlier; t++)
        if ((rc = check_signature(earlier[t], in, t, err))) return rc;

    layer_work work[MODEL_MAX_LINEARS];
    memset(work, 0, sizeof work);
    plan->overlap = calloc((size_t)n_earlier + 1, sizeof *plan->overlap);
    plan->overlap_num = calloc((size_t)n_earlier + 1, sizeof *plan->overlap_num);
    plan->overlap_den = calloc((size_t)n_earlier + 1, sizeof *plan->overlap_den);
    if (!plan->overlap || !plan->overlap_num || !plan->overlap_den) {
        rank_plan_finish(plan);
        return clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
    }

    /* Pass 1: distance, components and what they earn, overlaps, novelty. */
    double E = 0.0, W2 = 0.0, useful = 0.0, own2 = 0.0;
    for (int li = 0; li < in->n_linear; li++) {
        const rank_input_layer *L = &in->layer[li];
        rank_layer *R = &plan->layer[li];
        if (!L->pull) continue;
        R->target = true;
        R->overlap = calloc((size_t)n_earlier + 1, sizeof *R->overlap);
        if (!R->overlap) {
            rc = clad_err_set(err, CLAD_ENOMEM, "ranks: out of memory");
            goto cleanup;
        }
        double e = linalg_frob2(L->pull, (size_t)L->out * (size_t)L->in);
        R->energy = e;
        R->distance = L->w_norm2 > 0.0 ? sqrt(e / L->w_norm2) : 0.0;
        E += e;
        W2 += L->w_norm2;
        if ((rc = work_alloc(&work[li], L->out, L->in, err))) goto cleanup;
        if ((rc = rank_components(work[li].U, work[li].s, work[li].Vt, work[li].gain, L->pull, L->grad, L->out,
                                  L->in, err)))
            goto cleanup;
        R->floor = rank_floor(work[li].gain, work[li].k, pol->theta);
        for (int i = 0; i < work[li].k; i++) {
            R->gain += work[li].gain[i];
            if (work[li].gain[i] >= R->floor) R->useful += work[li].gain[i];
        }
        useful += R->useful;
        if ((rc = keep_pull(R, &work[li], L, err))) goto cleanup;
        own2 += sum_sq(R->pull_gain, R->pull_k);
        if ((rc = layer_overlaps(plan, R, &work[li], L, earlier, n_earlier, li, err))) goto cleanup;
    }
    plan->distance = W2 > 0.0 ? sqrt(E / W2) : 0.0;
    double nov = 0.0;
    for (int li = 0; li < in->n_linear; li++) {
        rank_layer *R = &plan->layer[li];
        if (!R->target) continue;
        R->energy = E > 0.0 ? R->energy / E : 0.0;
        plan->gain += R->gain;
        double w = useful > 0.0 ? R->useful / useful : 0.0;
        nov += w * R->novelty;
    }
    for (int t = 0; t < n_earlier; t++) {
        double d = plan->overlap_num[t], den = own2 * plan->overlap_den[t];
        plan->overlap[t] = d > 0.0 && den > 0.0 ? d / sqrt(den) : 0.0;
    }
    plan->novelty = useful > 0.0 ? nov : 1.0;

    /* Reuse: only auto builds on an earlier task. */
    if (pol->kind == RANK_AUTO)
        for (int t = 0; t < n_earlier; t++)
            if (plan->overlap[t] >= pol->reuse_min && (plan->reuse < 0 || plan->overlap[t] > plan->overlap[plan->reuse]))
                plan->reuse = t;

    /* Pass 2: ranks. */
    for (int li = 0; li < in->n_linear; li++) {
        const rank_input_layer *L = &in->layer[li];
        rank_layer *R = &plan->layer[li];
        if (!R->target) continue;
        int size = model_linear_max_rank(L->out, L->in);
        const signature *reused = plan->reuse >= 0 ? earlier[plan->reuse] : NULL;
        R->reused = reused ? reused->layer[li].k : 0;
        int room = size - R->reused;
        double chance_left = 1.0;
        if ((rc = novel_gains(&work[li], &chance_left, L, reused, li, err))) goto cleanup;
        R->left_at = pol->left_min * chance_left;
        R->found = rank_count_directions(work[li].novel_gain, work[li].k, R->floor);
        double left = 0.0;
        for (int i = 0; i < R->found; i++) left += work[li].novel_gain[i];
        R->left = R->useful > 0.0 ? left / R->useful : (R->found ? 1.0 : 0.0);
        if (!reused) R->left = R->found ? 1.0 : 0.0;
        /* Directions are bought in the order they earn (novel_gain is sorted): each costs scale x (out + in)
         * new parameters and must earn the price on each of them. */
        double per = pol->scale * (double)layer_cost(L);
        R->best_per_param = R->found ? work[li].novel_gain[0] / per : 0.0;
        R->directions = 0;
        while (R->directions < R->found && work[li].novel_gain[R->directions] / per >= pol->price) R->directions++;
        int r = 0;
        switch (pol->kind) {
        case RANK_FIXED:
            r = clampi(pol->fixed, 0, size);
            R->why = r < pol->fixed ? "layer size" : "fixed";
            break;
        case RANK_LINEAR:
            r = (int)lround(pol->linear_gain * R->distance);
            R->why = "distance";
            if (r > 0) {
                if (r < pol->r_min) R->why = "r_min";
                if (r > pol->r_max) R->why = "r_max";
                r = clampi(r, pol->r_min, pol->r_max);
            } else {
                R->why = "negligible";
            }
            break;
        case RANK_AUTO:
            r = rank_layer_covered(plan, R) ? 0 : (int)ceil(pol->scale * R->directions - 1e-9);
            R->why = R->directions < R->found ? "price" : "directions";
            if (r > 0) {
                if (r < pol->r_min) R->why = "r_min";
                if (r > pol->r_max) R->why = "r_max";
                r = clampi(r, pol->r_min, pol->r_max);
            } else if (!rank_layer_covered(plan, R) && R->found) {
                R->why = "price";
            } else {
                R->why = reused && R->pull_k ? "covered by reuse" : "negligible";
            }
            break;
        }
        if (r > room) {
            r = room > 0 ? room : 0;
            R->why = "layer size";
        }
        R->rank = r;
    }

    /* Every task keeps at least r_min somewhere: on the layer whose pull earns most (its significant
     * components, then all of them, then the largest energy), so it can learn. A task that reuses an earlier
     * one learns through the reused change and its own head, so it may get no new rank at all. */
    if (pol->kind != RANK_FIXED && plan->reuse < 0) {
        int total = 0, best = -1;
        for (int li = 0; li < in->n_linear; li++) {
            const rank_layer *R = &plan->layer[li];
            if (!R->target) continue;
            total += R->rank;
            const rank_layer *Bst = best < 0 ? NULL : &plan->layer[best];
            if (!Bst || R->useful > Bst->useful ||
                (R->useful == Bst->useful && (R->gain > Bst->gain || (R->gain == Bst->gain && R->energy > Bst->energy))))
                best = li;
        }
        int rmin = pol->r_min > 0 ? pol->r_min : 1;
        if (total == 0 && best >= 0) {
            int size = model_linear_max_rank(in->layer[best].out, in->layer[best].in);
            plan->layer[best].rank = clampi(rmin, 0, size - plan->layer[best].reused);
            plan->layer[best].why = "minimum";
        }
    }

    /* Budget: drop the direction that earns least per parameter (auto) or a rank of the highest-ranked layer
     * (linear) until the new factors fit; the task keeps one direction. */
    long params = 0;
    for (int li = 0; li < in->n_linear; li++) params += (long)plan->layer[li].rank * layer_cost(&in->layer[li]);
    if (pol->budget > 0 && pol->kind != RANK_FIXED) {
        while (params > pol->budget) {
            int pick = -1, total = 0;
            double worst = INFINITY;
            for (int li = 0; li < in->n_linear; li++) {
                const rank_layer *R = &plan->layer[li];
                total += R->rank;
                if (!R->target || R->rank == 0) continue;
                /* auto: what the direction this rank unit belongs to earns (scale units per direction) */
                int d = (int)ceil((double)R->rank / pol->scale - 1e-9) - 1;
                if (d >= work[li].k) d = work[li].k - 1;
                double score = pol->kind == RANK_AUTO ? work[li].novel_gain[d < 0 ? 0 : d] / (double)layer_cost(&in->layer[li])
                                                      : -(double)R->rank;
                if (score < worst) {
                    worst = score;
                    pick = li;
                }
            }
            if (pick < 0 || total <= 1) break;
            plan->layer[pick].rank--;
            plan->layer[pick].why = "budget";
            params -= layer_cost(&in->layer[pick]);
        }
    }
    plan->new_params = params;
    for (int li = 0; li < in->n_linear; li++) {
        plan->ranks[li] = plan->layer[li].rank;
        plan->total[li] = plan->layer[li].rank + plan->layer[li].reused;
    }
cleanup:
    for (int li = 0; li < MODEL_MAX_LINEARS; li++) work_finish(&work[li]);
    if (rc) rank_plan_finish(plan);
    return rc;
}

int rank_plan_init_adapter(adapter *a, const rank_plan *plan, clad_err *err)
{
    if (plan->reuse >= 0) return clad_err_set(err, CLAD_EINVAL, "ranks: a plan that reuses a task cannot start from the pull");
    if (a->kind != ADAPTER_LORA || a->n_linear != plan->n_linear)
        return clad_err_set(err, CLAD_EINVAL, "ranks: only a LoRA adapter of the plan's model starts from the pull");
    for (int li = 0; li < plan->n_linear; li++) {
        const rank_layer *R = &plan->layer[li];
        int r = a->rank[li];
        if (r != plan->ranks[li]) return clad_err_set(err, CLAD_EINVAL, "ranks: the adapter's ranks are not the plan's");
        int k = r < R->pull_k ? r : R->pull_k;
        if (k < 1) continue;
        const param_tensor *At = &a->params.t[a->A[li]];
        int in = At->shape[1], out = a->params.t[a->B[li]].shape[0];
        float *A = param_set_ptr(&a->params, a->A[li]), *B = param_set_ptr(&a->params, a->B[li]);
        float scale = adapter_scale(a, li);
        for (int j = 0; j < k; j++) {
            float f = sqrtf(R->pull_s[j] / scale);
            for (int c = 0; c < in; c++) A[(size_t)j * in + c] = f * R->pull_Vt[(size_t)j * in + c];
            for (int o = 0; o < out; o++) B[(size_t)o * r + j] = f * R->pull_U[(size_t)o * R->pull_k + j];
        }
    }
    return 0;
}
