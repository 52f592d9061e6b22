/* Continual learning, one task at a time; see cl.h. */
#include "core/cl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/prune.h"

void cl_config_default(cl_config *c, const model *m)
{
    memset(c, 0, sizeof *c);
    rank_policy_default(&c->policy);
    probe_config_default(&c->probe);
    for (int li = 0; li < m->n_linear; li++) c->targets[li] = rank_linear_is_candidate(m, li);
    c->alpha = 16.0f;
    c->signature_keep = SIGNATURE_KEEP;
}

int cl_plan_task(cl_plan *plan, const model *base, const signature *const *earlier, int n_earlier,
                 const dataset *task, int n_classes, const cl_config *cfg, clad_err *err)
{
    memset(plan, 0, sizeof *plan);
    probe_result pr;
    int rc = probe_run(&pr, base, cfg->targets, task, n_classes, &cfg->probe, err);
    if (rc) return rc;
    /* The rank rule is quick (SVDs of layer-sized matrices); one more look at a stop request before it. */
    if (cfg->probe.stop && cfg->probe.stop(cfg->probe.stop_ctx)) {
        probe_result_finish(&pr);
        return clad_err_set(err, CLAD_ECANCELLED, "planning stopped on request");
    }
    rank_input in;
    rank_input_from_probe(&in, base, &pr);
    rc = rank_plan_compute(&plan->rank, &in, earlier, n_earlier, &cfg->policy, err);
    plan->loss_before = pr.loss_before;
    plan->loss_after = pr.loss_after;
    plan->holdout_before = pr.holdout_before;
    plan->holdout_after = pr.holdout_after;
    plan->probe_seconds = pr.seconds;
    probe_result_finish(&pr);
    return rc;
}

void cl_plan_finish(cl_plan *plan)
{
    if (plan) rank_plan_finish(&plan->rank);
}

/* A copy of base with the reused task's change added to its weights, so the new components train on top of
 * it exactly as they will run inside the final adapter. */
static model *base_plus(const model *base, const signature *reused, clad_err *err)
{
    model *m = model_create(&base->cfg, err);
    if (!m) return NULL;
    memcpy(m->params.data, base->params.data, base->params.total * sizeof *base->params.data);
    for (int li = 0; li < base->n_linear; li++) {
        const sig_layer *S = &reused->layer[li];
        if (!S->k) continue;
        const model_linear *L = &base->linear[li];
        size_t n = (size_t)L->out * (size_t)L->in;
        float *d = malloc(n * sizeof *d);
        if (!d) {
            clad_err_set(err, CLAD_ENOMEM, "out of memory");
            model_destroy(m);
            return NULL;
        }
        signature_layer_delta(d, reused, li);
        float *w = param_set_ptr(&m->params, L->weight);
        for (size_t i = 0; i < n; i++) w[i] += d[i];
        free(d);
    }
    return m;
}

void cl_adapter_put_reused(adapter *a, const model *base, const signature *reused, const int *reused_ranks)
{
    for (int li = 0; li < base->n_linear; li++) {
        int tot = a->rank[li], kr = reused_ranks[li];
        if (!tot || !kr) continue;
        const model_linear *L = &base->linear[li];
        float sf = adapter_scale(a, li);
        float *A = param_set_ptr(&a->params, a->A[li]), *B = param_set_ptr(&a->params, a->B[li]);
        const sig_layer *S = &reused->layer[li];
        for (int j = 0; j < kr; j++) {
            memcpy(A + (size_t)j * L->in, S->Vt + (size_t)j * L->in, (size_t)L->in * sizeof *A);
            for (int r = 0; r < L->out; r++) B[(size_t)r * tot + j] = S->U[(size_t)r * S->k + j] * S->s[j] / sf;
        }
    }
}

/* Final adapter: [reused | new] factors, with each part's scale folded into its B columns so that
 * (alpha / total) B A reproduces both changes. */
static adapter *compose(const model *base, const cl_plan *plan, const signature *reused, const adapter *fresh,
                        float alpha, int n_classes, clad_err *err)
{
    adapter *a = adapter_create(base, plan->rank.total, alpha, n_classes, err);
    if (!a) return NULL;
    int kr_of[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < base->n_linear; li++) kr_of[li] = plan->rank.layer[li].reused;
    cl_adapter_put_reused(a, base, reused, kr_of);
    for (int li = 0; li < base->n_linear; li++) {
        int tot = a->rank[li];
        if (!tot) continue;
        const model_linear *L = &base->linear[li];
        int kr = kr_of[li], kn = fresh->rank[li];
        float sf = adapter_scale(a, li);
        float *A = param_set_ptr(&a->params, a->A[li]), *B = param_set_ptr(&a->params, a->B[li]);
        if (!kn) continue;
        const float *An = param_set_ptr(&fresh->params, fresh->A[li]), *Bn = param_set_ptr(&fresh->params, fresh->B[li]);
        float ratio = adapter_scale(fresh, li) / sf;
        memcpy(A + (size_t)kr * L->in, An, (size_t)kn * L->in * sizeof *A);
        for (int r = 0; r < L->out; r++)
            for (int j = 0; j < kn; j++) B[(size_t)r * tot + kr + j] = Bn[(size_t)r * kn + j] * ratio;
    }
    size_t hw = a->params.t[a->head_w].numel, hb = a->params.t[a->head_b].numel;
    memcpy(param_set_ptr(&a->params, a->head_w), param_set_ptr(&fresh->params, fresh->head_w), hw * sizeof(float));
    memcpy(param_set_ptr(&a->params, a->head_b), param_set_ptr(&fresh->params, fresh->head_b), hb * sizeof(float));
    return a;
}

/* Auto with start: trains the wide adapter for the policy's first `cut` of the steps, cuts every layer to
 * the components training made large enough (rank_plan_keep_trained), and trains the cut adapter for the
 * remaining steps, with the learning rate and data order of one uninterrupted run. Returns the cut adapter
 * (wide, trained for the first part, stays the caller's) and writes the kept ranks into plan. */
static adapter *train_wide_then_cut(model *tm, adapter *wide, cl_plan *plan, const dataset *task,
                                    const cl_config *cfg, const train_config *tc, train_step_fn on_step, void *ctx,
                                    train_result *res, clad_err *err)
{
    long total = train_total_steps(tc, task->n), cut = lround(cfg->policy.cut * (double)total);
    if (cut < 1) cut = 1;
    train_config first = *tc, rest = *tc;
    first.step_end = cut < total ? cut : 0;
    rest.step_begin = cut;
    train_result r1 = {0}, r2 = {0};
    float *S = malloc((size_t)MODEL_MAX_LINEARS * PRUNE_MAX_RANK * sizeof *S);
    adapter *out = NULL;
    if (!S) {
        clad_err_set(err, CLAD_ENOMEM, "out of memory");
        return NULL;
    }
    if (train_run(tm, wide, task, &first, on_step, ctx, &r1, err) || prune_spectra(S, wide, tm, err))
        goto done;
    for (int li = 0; li < tm->n_linear; li++)
        for (int j = 0; j < wide->rank[li]; j++) S[(size_t)li * PRUNE_MAX_RANK + j] *= adapter_scale(wide, li);
    rank_plan_keep_trained(&plan->rank, tm, S, PRUNE_MAX_RANK, &cfg->policy);
    if (!(out = prune_rank_to(wide, tm, plan->rank.ranks, err))) goto done;
    memset(out->rank_before, 0, sizeof out->rank_before); /* the plan records the start (rank_start) */
    if (cut < total && train_run(tm, out, task, &rest, on_step, ctx, &r2, err)) {
        adapter_destroy(out);
        out = NULL;
        goto done;
    }
    if (res) {
        res->steps = r1.steps + r2.steps;
        res->final_loss = cut < total ? r2.final_loss : r1.final_loss;
        res->seconds = r1.seconds + r2.seconds;
        res->samples = r1.samples + r2.samples;
    }
done:
    free(S);
    return out;
}

adapter *cl_train_task(const model *base, cl_plan *plan, const signature *reused, const dataset *task,
                       int n_classes, const cl_config *cfg, const train_config *tc, uint64_t init_seed,
                       train_step_fn on_step, void *ctx, train_result *res, clad_err *err)
{
    bool reuse = plan->rank.reuse >= 0;
    if (reuse && !reused) {
        clad_err_set(err, CLAD_EINVAL, "the plan reuses earlier task %d but its signature was not given",
                     plan->rank.reuse);
        return NULL;
    }
    if (plan->rank.n_linear != base->n_linear) {
        clad_err_set(err, CLAD_EINVAL, "the plan is for a model with %d linears, the base has %d",
                     plan->rank.n_linear, base->n_linear);
        return NULL;
    }
    bool grow = rank_policy_trains_ranks(&cfg->policy);
    if (grow) rank_plan_start(&plan->rank, base, &cfg->policy);
    /* Without reuse the base itself is used: train_run never writes a base while it trains an adapter. */
    model *tm = reuse ? base_plus(base, reused, err) : (model *)base;
    if (!tm) return NULL;
    adapter *fresh = adapter_create(tm, plan->rank.ranks, rank_plan_training_alpha(&plan->rank, &cfg->policy, cfg->alpha),
                                    n_classes, err),
            *out = NULL;
    if (!fresh) goto cleanup;
    adapter_init(fresh, tm, init_seed);
    /* Only auto may start from the pull (off by default, docs/RANKS.md 6c): fixed:N and linear are the baselines
     * a PEFT user would run. */
    if (cfg->init_from_pull && cfg->policy.kind == RANK_AUTO && !reuse && rank_plan_init_adapter(fresh, &plan->rank, err))
        goto cleanup;
    if (grow) {
        adapter *cut = train_wide_then_cut(tm, fresh, plan, task, cfg, tc, on_step, ctx, res, err);
        adapter_destroy(fresh);
        if (!(fresh = cut)) goto cleanup;
    } else if (train_run(tm, fresh, task, tc, on_step, ctx, res, err)) {
        goto cleanup;
    }
    if (!reuse) {
        out = fresh;
        fresh = NULL;
        adapter_lora_set_alpha(out, cfg->alpha);
    } else {
        out = compose(base, plan, reused, fresh, cfg->alpha, n_classes, err);
    }
cleanup:
    adapter_destroy(fresh);
    if (tm != base) model_destroy(tm);
    return out;
}

int cl_signature_compute(signature *sig, const model *base, const adapter *a, const cl_plan *plan,
                         const cl_config *cfg, clad_err *err)
{
    int rc = signature_compute(sig, base, a, cfg->signature_keep, err);
    for (int li = 0; !rc && li < base->n_linear && li < plan->rank.n_linear; li++) {
        const rank_layer *R = &plan->rank.layer[li];
        if (R->target && R->pull_k) rc = sig_layer_set_pull(&sig->layer[li], R->pull_U, R->pull_Vt, R->pull_gain, R->pull_k, err);
    }
    if (rc) signature_finish(sig);
    return rc;
}
