/* The continual-learning pipeline for one task; see cl_pipeline.h. */
#include "core/cl_pipeline.h"

#include <string.h>

#include "core/prune.h"

void cl_task_options_default(cl_task_options *o)
{
    memset(o, 0, sizeof *o);
    o->from = -1;
    o->init_seed = 1;
}

static int check_stop(const cl_config *cfg, const char *phase, clad_err *err)
{
    if (cfg->probe.stop && cfg->probe.stop(cfg->probe.stop_ctx))
        return clad_err_set(err, CLAD_ECANCELLED, "stopped on request %s", phase);
    return 0;
}

static int layer_size(const model_linear *L) { return model_linear_max_rank(L->out, L->in); }

/* fixed:N without a probe: N on every target (clamped to the layer's size), nothing else measured. */
static void plan_fixed(cl_plan *plan, const model *base, const cl_config *cfg)
{
    memset(plan, 0, sizeof *plan);
    rank_plan *p = &plan->rank;
    p->n_linear = base->n_linear;
    p->reuse = -1;
    for (int li = 0; li < base->n_linear; li++) {
        const model_linear *L = &base->linear[li];
        if (!cfg->targets[li] || L->is_head) continue;
        rank_layer *R = &p->layer[li];
        int size = layer_size(L), r = cfg->policy.fixed < size ? cfg->policy.fixed : size;
        R->target = true;
        R->rank = r;
        R->why = r < cfg->policy.fixed ? "layer size" : "fixed";
        p->ranks[li] = p->total[li] = r;
        p->new_params += (long)r * (L->out + L->in);
    }
}

/* Continue from earlier task `idx` whatever the rule chose: its whole change is reused on every target,
 * and the new ranks are cut to the room left in each layer. */
static void plan_force_reuse(rank_plan *p, const model *base, const signature *sig, int idx)
{
    p->reuse = idx;
    p->new_params = 0;
    for (int li = 0; li < base->n_linear; li++) {
        rank_layer *R = &p->layer[li];
        if (!R->target) continue;
        const model_linear *L = &base->linear[li];
        int size = layer_size(L), kr = sig->layer[li].k < size ? sig->layer[li].k : size;
        R->reused = kr;
        if (R->rank > size - kr) {
            R->rank = size - kr;
            R->why = "layer size";
        }
        p->ranks[li] = R->rank;
        p->total[li] = R->rank + kr;
        p->new_params += (long)R->rank * (L->out + L->in);
    }
}

static int plan_phase(cl_task_result *res, const model *base, const signature *const *earlier, int n_earlier,
                      const dataset *task, int n_classes, const cl_config *cfg, const cl_task_options *opt,
                      clad_err *err)
{
    double t0 = train_clock_seconds();
    int rc = 0;
    if (cfg->policy.kind == RANK_FIXED && !opt->explain) {
        plan_fixed(&res->plan, base, cfg);
    } else {
        /* reuse=0 turns reuse of earlier tasks off: the rule then sees none. */
        bool reuse_off = cfg->policy.kind == RANK_AUTO && cfg->policy.reuse_min <= 0.0;
        rc = cl_plan_task(&res->plan, base, reuse_off ? NULL : earlier, reuse_off ? 0 : n_earlier, task, n_classes,
                          cfg, err);
        res->planned = rc == 0;
    }
    if (!rc && opt->from >= 0 && res->plan.rank.reuse != opt->from)
        plan_force_reuse(&res->plan.rank, base, earlier[opt->from], opt->from);
    res->plan_seconds = res->planned ? train_clock_seconds() - t0 : 0.0;
    return rc;
}

/* Tied-LoRA shares one pair per shape group, so every target gets the plan's largest rank; it trains on the
 * base alone (no reuse). */
static adapter *train_tied(const model *base, const cl_plan *plan, const dataset *task, int n_classes,
                           const cl_config *cfg, const train_config *tc, const cl_task_options *opt,
                           train_result *tr, clad_err *err)
{
    int ranks[MODEL_MAX_LINEARS] = {0}, r = 1;
    for (int li = 0; li < base->n_linear; li++)
        if (plan->rank.total[li] > r) r = plan->rank.total[li];
    for (int li = 0; li < base->n_linear; li++) ranks[li] = cfg->targets[li] ? r : 0;
    adapter *ad = adapter_tied_create(base, ranks, (tied_variant)opt->tied, n_classes, err);
    if (!ad) return NULL;
    adapter_init(ad, base, opt->init_seed);
    if (train_run((model *)base, ad, task, tc, opt->on_step, opt->ctx, tr, err)) {
        adapter_destroy(ad);
        return NULL;
    }
    return ad;
}

static int signature_phase(cl_task_result *res, const model *base, const cl_config *cfg, clad_err *err)
{
    double t0 = train_clock_seconds();
    int rc;
    if (res->ad->kind == ADAPTER_TIED) {
        /* The signature describes the change, whatever its parametrisation. */
        adapter *as_lora = adapter_tied_to_lora(res->ad, base, err);
        rc = as_lora ? cl_signature_compute(&res->sig, base, as_lora, &res->plan, cfg, err) : CLAD_ENOMEM;
        adapter_destroy(as_lora);
    } else {
        rc = cl_signature_compute(&res->sig, base, res->ad, &res->plan, cfg, err);
    }
    res->signature_seconds = train_clock_seconds() - t0;
    return rc;
}

int cl_task_run(cl_task_result *res, const model *base, const signature *const *earlier, int n_earlier,
                const dataset *task, int n_classes, const cl_config *cfg, const train_config *tc,
                const cl_task_options *opt, clad_err *err)
{
    memset(res, 0, sizeof *res);
    res->reuse = -1;
    if (opt->from >= n_earlier) return clad_err_set(err, CLAD_EINVAL, "pipeline: no earlier task %d to continue from", opt->from);
    int rc = check_stop(cfg, "before planning", err);
    if (!rc) rc = plan_phase(res, base, earlier, n_earlier, task, n_classes, cfg, opt, err);
    if (!rc) rc = check_stop(cfg, "after planning", err);
    if (rc) return rc;
    if (opt->on_plan) opt->on_plan(opt->plan_ctx, res);

    const rank_plan *p = &res->plan.rank;
    if (opt->tied) {
        res->ad = train_tied(base, &res->plan, task, n_classes, cfg, tc, opt, &res->train, err);
    } else {
        res->ad = cl_train_task(base, &res->plan, p->reuse >= 0 ? earlier[p->reuse] : NULL, task, n_classes, cfg, tc,
                                opt->init_seed, opt->on_step, opt->ctx, &res->train, err);
        res->reuse = p->reuse;
        for (int li = 0; res->reuse >= 0 && li < base->n_linear; li++) res->reused[li] = p->layer[li].reused;
    }
    if (!res->ad) return err ? err->code : CLAD_EINVAL;
    res->train_seconds = res->train.seconds;
    if ((rc = check_stop(cfg, "after training", err))) return rc;

    if (opt->prune > 0 && res->ad->kind == ADAPTER_LORA) {
        /* Rank pruning: each layer keeps the smallest rank that holds `prune` of its energy. */
        adapter *pruned = prune_rank(res->ad, base, opt->prune, err);
        if (!pruned) return err ? err->code : CLAD_ENOMEM;
        memcpy(res->rank_before, res->ad->rank, sizeof res->rank_before);
        adapter_destroy(res->ad);
        res->ad = pruned;
        res->pruned = true;
    }
    if ((rc = signature_phase(res, base, cfg, err)) || (rc = check_stop(cfg, "after the signature", err))) return rc;

    res->params = (long)adapter_param_count(res->ad);
    res->new_params = res->params;
    /* A pruned adapter no longer holds the reused change as its first components: it is stored whole. */
    bool by_ref = false;
    for (int li = 0; li < base->n_linear; li++) by_ref |= res->reused[li] > 0;
    if (res->reuse >= 0 && !res->pruned && by_ref) {
        if (!(res->part = cl_adapter_new_part(res->ad, base, res->reused, err))) return err ? err->code : CLAD_ENOMEM;
        res->new_params = (long)adapter_param_count(res->part);
    } else {
        memset(res->reused, 0, sizeof res->reused);
    }
    return 0;
}

void cl_task_result_finish(cl_task_result *res)
{
    if (!res) return;
    cl_plan_finish(&res->plan);
    adapter_destroy(res->ad);
    adapter_destroy(res->part);
    signature_finish(&res->sig);
    res->ad = res->part = NULL;
}

/* Copies columns [from_a, from_a + n) of B and rows of A of layer li from src into columns [from_b, ...) of
 * dst, as they are. */
static void copy_components(adapter *dst, int from_b, const adapter *src, int from_a, int n, const model_linear *L, int li)
{
    const float *As = param_set_ptr(&src->params, src->A[li]);
    const float *Bs = param_set_ptr(&src->params, src->B[li]);
    float *Ad = param_set_ptr(&dst->params, dst->A[li]), *Bd = param_set_ptr(&dst->params, dst->B[li]);
    int rs = src->rank[li], rd = dst->rank[li];
    memcpy(Ad + (size_t)from_b * L->in, As + (size_t)from_a * L->in, (size_t)n * L->in * sizeof *Ad);
    for (int r = 0; r < L->out; r++)
        memcpy(Bd + (size_t)r * rd + from_b, Bs + (size_t)r * rs + from_a, (size_t)n * sizeof *Bd);
}

adapter *cl_adapter_new_part(const adapter *a, const model *base, const int *reused, clad_err *err)
{
    if (a->kind != ADAPTER_LORA) {
        clad_err_set(err, CLAD_EINVAL, "pipeline: only a LoRA adapter can be stored by reference");
        return NULL;
    }
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < base->n_linear; li++) {
        if (reused[li] < 0 || reused[li] > a->rank[li]) {
            clad_err_set(err, CLAD_EINVAL, "pipeline: layer '%s' reuses %d of %d components", base->linear[li].name,
                         reused[li], a->rank[li]);
            return NULL;
        }
        ranks[li] = a->rank[li] - reused[li];
    }
    adapter *part = adapter_create(base, ranks, a->alpha, a->n_classes, err);
    if (!part) return NULL;
    for (int li = 0; li < base->n_linear; li++)
        if (ranks[li]) copy_components(part, 0, a, reused[li], ranks[li], &base->linear[li], li);
    if (adapter_copy_head(part, a, err)) {
        adapter_destroy(part);
        return NULL;
    }
    return part;
}

adapter *cl_adapter_join(const model *base, const signature *reused_sig, const int *reused, const adapter *part,
                         clad_err *err)
{
    int total[MODEL_MAX_LINEARS] = {0};
    if (part->kind != ADAPTER_LORA || reused_sig->n_linear != base->n_linear) {
        clad_err_set(err, CLAD_EINVAL, "pipeline: a referenced part must be a LoRA of the same model as the signature");
        return NULL;
    }
    for (int li = 0; li < base->n_linear; li++) {
        const sig_layer *S = &reused_sig->layer[li];
        if (reused[li] < 0 || reused[li] > S->k ||
            (reused[li] && (S->out != base->linear[li].out || S->in != base->linear[li].in))) {
            clad_err_set(err, CLAD_EINVAL, "pipeline: layer '%s' reuses %d directions but the referenced signature "
                         "holds %d", base->linear[li].name, reused[li], S->k);
            return NULL;
        }
        total[li] = part->rank[li] + reused[li];
    }
    adapter *a = adapter_create(base, total, part->alpha, part->n_classes, err);
    if (!a) return NULL;
    cl_adapter_put_reused(a, base, reused_sig, reused);
    for (int li = 0; li < base->n_linear; li++)
        if (part->rank[li]) copy_components(a, reused[li], part, 0, part->rank[li], &base->linear[li], li);
    if (adapter_copy_head(a, part, err)) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}
