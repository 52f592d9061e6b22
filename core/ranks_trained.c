/* Ranks decided by training itself: start wide, cut to what the first part of training used; see ranks.h
 * (rank_plan_start, rank_plan_keep_trained) and docs/RANKS.md. */
#include "core/ranks.h"

#include <math.h>

#include "core/linalg.h"

static void plan_totals(rank_plan *plan, const model *m)
{
    plan->new_params = 0;
    for (int li = 0; li < plan->n_linear; li++) {
        const rank_layer *R = &plan->layer[li];
        plan->ranks[li] = R->rank;
        plan->total[li] = R->rank + R->reused;
        plan->new_params += (long)R->rank * (m->linear[li].out + m->linear[li].in);
    }
}

bool rank_policy_trains_ranks(const rank_policy *p) { return p->kind == RANK_AUTO && p->start > 0; }

/* With alpha / r, a rank-16 start would learn 16 / r times slower per component than the rank-r adapter it
 * is cut to, and most of a short run's progress would be lost to scaling (the rank-stabilised scale of
 * Kalajdzievski 2023; docs/RANKS.md, section 6c). The widest start sets it, not the policy's start: a
 * model whose layers leave less room trains as wide as they allow. The cut layers keep this alpha, so the
 * step size of the components a layer drops passes to the ones it keeps. */
float rank_plan_training_alpha(const rank_plan *plan, const rank_policy *p, float alpha)
{
    int wide = 0;
    for (int li = 0; li < plan->n_linear; li++)
        if (plan->layer[li].rank_start > wide) wide = plan->layer[li].rank_start;
    return rank_policy_trains_ranks(p) && p->stable && wide > 0 ? alpha * sqrtf((float)wide) : alpha;
}

bool rank_layer_covered(const rank_plan *plan, const rank_layer *R)
{
    return plan->reuse >= 0 && R->left < R->left_at;
}

void rank_plan_start(rank_plan *plan, const model *m, const rank_policy *pol)
{
    int start = pol->start;
    for (int li = 0; li < plan->n_linear; li++) {
        rank_layer *R = &plan->layer[li];
        R->rank_start = 0;
        /* A layer the reused task covers (what is left to learn there earns little) gets nothing new. */
        if (!R->target || rank_layer_covered(plan, R)) continue;
        int room = model_linear_max_rank(m->linear[li].out, m->linear[li].in) - R->reused;
        int r = start > room ? room : start;
        if (r > R->rank) R->rank = r;
        R->rank_start = R->rank;
    }
    plan_totals(plan, m);
}

void rank_plan_keep_trained(rank_plan *plan, const model *m, const float *S, int stride, const rank_policy *pol)
{
    int best = -1, kept = 0;
    double best_rel = 0.0, w_norm[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < plan->n_linear; li++) {
        rank_layer *R = &plan->layer[li];
        if (!R->target || !R->rank_start) continue;
        const model_linear *L = &m->linear[li];
        double w = w_norm[li] = sqrt(linalg_frob2(param_set_ptr(&m->params, L->weight), (size_t)L->out * (size_t)L->in));
        const float *s = S + (size_t)li * stride;
        /* A component also has to be a tenth of the layer's largest: what training moved a layer by in
         * directions it did not need is small next to the one it did (docs/RANKS.md 6b). */
        R->keep_at = w > 0.0 ? fmax(pol->keep, RANK_KEEP_OF_LARGEST * (double)s[0] / w) : 0.0;
        int k = 0;
        while (k < R->rank_start && w > 0.0 && (double)s[k] >= R->keep_at * w) k++;
        R->rank = k;
        R->kept_size = k ? (double)s[k - 1] / w : 0.0;
        R->why = k ? "trained" : "negligible after training";
        if (k > pol->r_max) {
            R->rank = pol->r_max;
            R->why = "r_max";
        }
        kept += R->rank;
        double rel = w > 0.0 ? (double)s[0] / w : 0.0;
        if (rel > best_rel) {
            best_rel = rel;
            best = li;
        }
    }
    /* Without a reused change the task learns only through its new components: it keeps at least r_min. */
    if (plan->reuse < 0 && best >= 0 && kept < pol->r_min) {
        rank_layer *R = &plan->layer[best];
        int r = pol->r_min < R->rank_start ? pol->r_min : R->rank_start;
        if (r > R->rank) {
            R->rank = r;
            R->kept_size = (double)S[(size_t)best * stride + r - 1] / w_norm[best];
            R->why = "minimum";
        }
    }
    plan_totals(plan, m);
}
