/* Task distance, overlap with earlier tasks, novelty and the per-layer rank rule.
 *
 * Input: the probe's pull dW_l on each target layer and the held-out loss gradient G_l averaged along the
 * probe's path (see core/probe.h), plus the signatures of the earlier tasks' adapters (core/signature.h).
 * Output: a rank_plan, i.e. per layer the rank of the new adapter and every number the decision used, so a
 * person (or the daemon's API) can see why each rank was chosen. docs/RANKS.md explains and justifies it.
 *
 * The pull is split into rank-one components dW_l = sum_i s_i u_i v_i^T (SVD). Component i EARNS
 * c_i = -s_i u_i^T G_l v_i nats of held-out loss reduction (integrated gradients along the probe's path):
 * directions the probe moved in only to fit its small training subset, or by optimizer noise, earn ~0,
 * as often less than 0 as more. A component is SIGNIFICANT when it earns at least the layer's floor
 * max(theta, RANK_FLOOR_MEDIANS x the median loss of the components that lose): what noise can earn by
 * chance, it can also lose, so the losses measure the noise (theta is an absolute minimum in nats).
 *
 *   distance_l   ||dW_l||_F / ||W_l||_F; the task's distance pools all targets the same way.
 *   gain_l       sum_i c_i, the held-out nats the layer's pull earns; useful_l = the sum over significant
 *                components (the layer's weight in every task-level average below).
 *   overlap_t    how much the new task pulls the way earlier task t pulled: the cosine between the two
 *                pulls' significant parts weighted by what they earn, S = sum_i c_i u_i v_i^T (t's is kept in
 *                its signature), pooled over layers: <S_new, S_t> / (|S_new| |S_t|), 0 when negative. A
 *                repeated task scores near 1, an unrelated one near 0; signs and weights count, so two tasks
 *                that move the same subspace in different ways are told apart.
 *   novelty      the share of the useful pull (component i weighted by c_i) lying OUTSIDE the union of every
 *                earlier task's footprint (the span of its adapter's change and of its pull, see
 *                core/signature.h): i counts with 1 - |Uf^T u_i|^2 |Vf^T v_i|^2.
 *   auto rank    the closest earlier task is REUSED when its overlap reaches reuse_min: its change is copied
 *                (frozen) into the new adapter, and only the rest of the pull needs new rank. Each significant
 *                component of that rest (dW_l minus its projection on the reused footprint) is a direction the
 *                layer could learn; it costs scale x (out + in) new parameters and is BOUGHT when what it
 *                earns per parameter reaches the policy's price. The rank of a layer is scale x the
 *                directions bought, clamped to [r_min, r_max]; none, or a rest earning less than left_min of
 *                the layer's useful pull (covered by the reused task): rank 0. So the parameters a task gets
 *                follow what its pull earns (far tasks earn more), directions the reused task already covers
 *                earn less and cost nothing, and small layers (patch_embed) are cheap. The task keeps at least
 *                r_min somewhere (the layer that earns most) so it can learn. A per-task budget then removes
 *                the directions that earn least per parameter first.
 *   fixed:N      N on every target (clamped to the layer's size); no reuse.
 *   linear       rank_l = round(linear_gain * distance_l), clamped to [r_min, r_max] (0 stays 0); no reuse.
 */
#ifndef CLAD_CORE_RANKS_H
#define CLAD_CORE_RANKS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "core/model.h"
#include "core/probe.h"
#include "core/signature.h"

typedef enum rank_policy_kind { RANK_AUTO = 1, RANK_FIXED, RANK_LINEAR } rank_policy_kind;

typedef struct rank_policy {
    rank_policy_kind kind;
    int fixed;            /* fixed:N */
    int r_min, r_max;     /* auto, linear */
    double theta;         /* auto: held-out nats a direction must earn in the probe to be worth a rank */
    double scale;         /* auto: ranks per significant direction (the probe sees the start of learning) */
    double price;         /* auto: held-out nats a direction must earn per new LoRA parameter it costs
                             (scale x (out + in)) to be bought; 0 buys every significant direction */
    double reuse_min;     /* auto: overlap at which the closest earlier task is reused (> 1: never) */
    double left_min;      /* auto with reuse: a layer whose part left to learn earns less than this share of
                             what its whole pull earns (times the share chance leaves outside the reused
                             footprint: rank_layer.left_at) is covered by the reused task (rank 0) */
    long budget;          /* auto, linear: new LoRA parameters per task (0: no budget) */
    int start;            /* auto: every target starts training with this many new components (0: train the
                             plan's ranks as they are); see rank_plan_keep_trained */
    double cut;           /* auto with start: share of the training steps after which the ranks are cut */
    double keep;          /* auto with start: relative size s_j / ||W_l||_F a trained component must reach */
    int stable;           /* auto with start: 1 trains at the rank-stabilised scale alpha / sqrt(r) of the
                             widest start r, 0 at alpha / rank (rank_plan_training_alpha) */
    double linear_gain;   /* linear: rank per unit of distance */
} rank_policy;

/* Defaults: auto, r_min 1, r_max 32, theta 0.004, scale RANK_DEFAULT_SCALE, price RANK_DEFAULT_PRICE,
 * reuse_min 0.5, left_min 0.25, no budget, start RANK_DEFAULT_START, cut 0.5, keep RANK_DEFAULT_KEEP,
 * linear_gain 100. */
#define RANK_DEFAULT_SCALE 1.0
#define RANK_DEFAULT_PRICE 1e-5
#define RANK_DEFAULT_START 64
#define RANK_DEFAULT_KEEP 0.03
void rank_policy_default(rank_policy *p);
/* "auto", "fixed:8", "linear", optionally followed by settings: "auto:theta=0.01,r_max=16,budget=20000",
 * "linear:gain=50". Keys: r_min, r_max, theta, scale, price, reuse, left, budget, start, cut, keep, stable,
 * gain. Errors: CLAD_EINVAL naming the part and, for a value, the range its key takes. */
int rank_policy_parse(rank_policy *p, const char *text, clad_err *err);
/* Canonical text of a policy into buf: "auto", "fixed:8", "linear", followed by the settings that differ
 * from the defaults ("auto:scale=2,r_max=16"); it parses back to the same policy. */
void rank_policy_name(const rank_policy *p, char *buf, size_t size);

/* What the rule reads, per model linear. */
typedef struct rank_input_layer {
    const char *name;
    int out, in;
    const float *pull;    /* (out,in) the probe's dW_l; NULL: not a target */
    const float *grad;    /* (out,in) path-averaged held-out gradient; NULL: gains unknown (all 0) */
    double w_norm2;       /* ||W_l||_F^2 of the reference */
} rank_input_layer;

typedef struct rank_input {
    int n_linear;
    rank_input_layer layer[MODEL_MAX_LINEARS];
} rank_input;

/* True for a linear the rank rule may adapt: every linear but the head (heads are per task and trained
 * whole), so a ViT's patch_embed is one (an input-level change such as x -> 1 - x is exactly a change of
 * patch_embed). model_linear_is_default_target is the narrower set a PEFT user usually configures. */
bool rank_linear_is_candidate(const model *m, int li);

/* Points in at the probe's arrays (they must outlive the input). */
void rank_input_from_probe(rank_input *in, const model *m, const probe_result *pr);

/* The explanation of one layer's decision. */
typedef struct rank_layer {
    bool target;
    double distance;      /* ||dW_l||_F / ||W_l||_F */
    double energy;        /* ||dW_l||_F^2 as a share of the task's pull over all targets */
    double gain;          /* held-out nats earned by the layer's pull (may be negative) */
    double useful;        /* sum of the positive component gains */
    double novelty;       /* share of the useful pull outside the union of earlier subspaces */
    double *overlap;      /* (n_earlier) cosine of the layer's pull with each earlier task's */
    double floor;         /* what a component must earn to be significant (see rank_floor) */
    int found;            /* significant components of the part of the pull left to learn */
    int directions;       /* of those, the ones bought (auto: worth their parameters at the policy's price) */
    double best_per_param;/* held-out nats per new parameter of the layer's best direction (0: none) */
    double left;          /* what those earn, as a share of useful (1 without reuse) */
    double left_at;       /* with reuse: the layer is covered when left is below this: left_min times the share
                             a random change would leave outside the reused footprint (rank_layer_covered) */
    int pull_k;           /* significant components of the whole pull, largest gain first: */
    float *pull_U;        /* (out,pull_k) their column vectors */
    float *pull_Vt;       /* (pull_k,in) their row vectors (kept for the task's signature) */
    double *pull_gain;    /* (pull_k) what each earned */
    float *pull_s;        /* (pull_k) their singular values (the size of each in the probe's change) */
    int rank;             /* new rank of the layer */
    int rank_start;       /* auto with start: the rank training started with (0: not grown) */
    double kept_size;     /* auto with start: relative size of the smallest kept component (0: none kept) */
    double keep_at;       /* auto with start: the relative size a component had to reach: keep, or a tenth
                             of the layer's largest if higher */
    int reused;           /* rank of the frozen components copied from the reused task */
    const char *why;      /* a short reason: "directions", "negligible", "minimum", "r_max", "budget", ... */
} rank_layer;

typedef struct rank_plan {
    int n_linear, n_earlier;
    rank_layer layer[MODEL_MAX_LINEARS];
    double distance, gain, novelty;
    double *overlap;                 /* (n_earlier) task-level overlap with each earlier task */
    double *overlap_num, *overlap_den; /* (n_earlier) internal: pooled <S_new, S_t> and |S_t|^2 */
    int reuse;                       /* the earlier task reused, or -1 */
    int ranks[MODEL_MAX_LINEARS];    /* new ranks (what the task trains) */
    int total[MODEL_MAX_LINEARS];    /* new + reused: the ranks of the adapter that is stored */
    long new_params;                 /* new LoRA factor parameters (the head is not counted here) */
} rank_plan;

/* Computes the plan for one task. earlier[t] (t < n_earlier) are the signatures of the earlier tasks'
 * adapters, for the same model (may be NULL when n_earlier is 0). plan is caller memory, initialised
 * here; release with rank_plan_finish. Errors: CLAD_EINVAL (no target, shapes that disagree with a
 * signature), CLAD_ENOMEM, CLAD_EINTERNAL (LAPACK). */
int rank_plan_compute(rank_plan *plan, const rank_input *in, const signature *const *earlier, int n_earlier,
                      const rank_policy *pol, clad_err *err);
void rank_plan_finish(rank_plan *plan);   /* accepts a zeroed or finished plan */

/* Starts a LoRA adapter from the probe's work: in every layer, the first min(rank, pull_k) components of a
 * are set to the pull's significant components, largest gain first, so that scale B A equals their sum
 * (B[:,j] = u_j sqrt(s_j / scale), A[j,:] = sqrt(s_j / scale) v_j); the remaining components keep
 * adapter_init's values. Only for a plan without reuse (a reused plan's new components learn the part left
 * after the reused change, which the pull's components are not). a must be a LoRA adapter with the plan's
 * new ranks; the head is untouched. Errors: CLAD_EINVAL (reuse, kind or ranks that do not match). */
int rank_plan_init_adapter(adapter *a, const rank_plan *plan, clad_err *err);

/* True when training decides the ranks (auto with start > 0): the plan's ranks are then where training
 * starts, and the kept ones are known only after training. */
bool rank_policy_trains_ranks(const rank_policy *p);
/* True when the plan reuses an earlier task and layer R's part left to learn earns less than R->left_at: the
 * reused change already does what the task needs there. */
bool rank_layer_covered(const rank_plan *plan, const rank_layer *R);
/* The LoRA alpha a task's adapter trains with, under policy p, when it is stored with `alpha`, once
 * rank_plan_start has run: alpha x sqrt(r) when training decides the ranks and p->stable, r the widest start
 * any layer got (so that layer trains at alpha / sqrt(r), and a layer cut to k components at
 * alpha sqrt(r) / k); else alpha. */
float rank_plan_training_alpha(const rank_plan *plan, const rank_policy *p, float alpha);

/* Auto with start > 0, before training: every target layer starts with pol->start new components (within
 * the room its size leaves after the reused ones), whatever the probe found, except a layer the reused task
 * covers (rank_layer_covered), which gets none. The plan's ranks, totals and new_params follow. */
void rank_plan_start(rank_plan *plan, const model *m, const rank_policy *pol);

/* After the first `cut` of the training: S holds, per layer, the singular values of the trained new
 * change (scale x B A; MODEL_MAX_LINEARS rows of `stride`, largest first). Layer l keeps its components
 * whose size s_j reaches keep_at x ||W_l||_F (W_l the weight the change is added to), keep_at being
 * pol->keep, or RANK_KEEP_OF_LARGEST of the layer's largest component if that is higher. So the rank a
 * layer ends with is what training moved it by, measured against the layer itself: a task near what the
 * model (and a reused task) already does moves little and keeps little, a far task keeps more, and a layer
 * that did not need to move keeps nothing. A task that reuses no earlier one keeps at least r_min components (its largest). Updates
 * rank, why, kept_size, keep_at, the plan's ranks, totals and new_params. */
void rank_plan_keep_trained(rank_plan *plan, const model *m, const float *S, int stride, const rank_policy *pol);

/* Rank-one components of one matrix and what each earns: s (k), U (m,k), Vt (k,n), gain (k) with
 * k = min(m,n) and gain_i = -s_i u_i^T G v_i (0 when G is NULL). Exposed for tests and tools.
 * Errors as linalg_svd. */
int rank_components(float *U, float *s, float *Vt, double *gain, const float *X, const float *G, int m, int n,
                    clad_err *err);

/* Number of entries of gain (k) that are >= theta. */
int rank_count_directions(const double *gain, int k, double theta);
/* The significance floor of a layer: max(theta, RANK_FLOOR_MEDIANS * median of -gain_i over gain_i < 0). */
#define RANK_FLOOR_MEDIANS 4.0
/* rank_plan_keep_trained: a kept component is at least this share of its layer's largest. */
#define RANK_KEEP_OF_LARGEST 0.1
double rank_floor(const double *gain, int k, double theta);

#endif
