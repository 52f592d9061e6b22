/* The probe: a short, cheap, deterministic estimate of how a new task pulls each target layer of the
 * reference model.
 *
 * The probe trains, on a small subset of the task's data and for a few dozen steps, a DENSE change dW_l of
 * every target linear's weight (plus the task's head) starting at the reference weights; everything else is
 * frozen. The resulting dW_l is the task's pull on layer l: its size says how far the task is from the
 * reference, its singular spectrum says in how many directions. A dense probe, not a LoRA one, so the pull
 * is not limited to a guessed rank; an adaptive optimizer (Adam), not the raw gradient, because the raw
 * gradient at the reference concentrates in about as many directions as there are classes, hiding the rest
 * of the spectrum (see docs/RANKS.md). The reference model is never modified: the probe works on a copy.
 */
#ifndef CLAD_CORE_PROBE_H
#define CLAD_CORE_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dataset.h"
#include "core/model.h"

typedef struct probe_config {
    int samples;       /* training subset of the task's data (taken after a seeded shuffle); 16..65536 */
    int holdout;       /* disjoint held-out subset that judges which directions of the pull matter; 16..65536 */
    int path_points;   /* points on the straight path from the reference to the probe's end (1..64) */
    int steps;         /* optimizer steps; 1..10000 */
    int batch;         /* minibatch; 1..4096 */
    float lr;          /* Adam learning rate (constant) */
    uint64_t seed;     /* subset and minibatch order */
    /* Optional: polled between steps and between evaluation batches (each well under 0.5 s); true ends
     * the probe with CLAD_ECANCELLED. Called on the probe's thread. */
    bool (*stop)(void *ctx);
    void *stop_ctx;
} probe_config;

/* Defaults: 256 samples, 128 held out, 2 path points, 32 steps, batch 16, lr 1.5e-3, seed 1, no stop. */
void probe_config_default(probe_config *c);
int probe_config_validate(const probe_config *c, clad_err *err);

typedef struct probe_result {
    int n_linear;
    bool target[MODEL_MAX_LINEARS];
    float *delta[MODEL_MAX_LINEARS];   /* (out,in) the pull dW_l on each target; NULL elsewhere */
    float *grad[MODEL_MAX_LINEARS];    /* (out,in) the held-out loss gradient w.r.t. W_l averaged over the
                                          path W0 + t dW, t in (0,1): <-grad, X> is the held-out loss
                                          reduction a component X of the pull earns (integrated gradients) */
    double w_norm2[MODEL_MAX_LINEARS]; /* ||W_l||_F^2 of the reference weight, every linear */
    float loss_before, loss_after;     /* training loss: the first minibatch's at the reference, and the mean
                                          of the last 8 minibatches' (each before its update) */
    float holdout_before, holdout_after; /* the same on the held-out subset */
    double seconds;
} probe_result;

/* Probes task data d (labels in [0, n_classes)) against the reference m on the linears flagged in
 * targets (indexed like m->linear; the head must not be flagged). The head used by the probe is the
 * base head when n_classes matches the base, else a fresh one (as adapter_init does). res is caller memory,
 * initialised here; release with probe_result_finish. m is only read.
 * Errors: CLAD_EINVAL (config, data that does not fit the model, no target), CLAD_ENOMEM, CLAD_ECANCELLED
 * (pc->stop said so). */
int probe_run(probe_result *res, const model *m, const bool *targets, const dataset *d, int n_classes,
              const probe_config *pc, clad_err *err);
void probe_result_finish(probe_result *res);  /* accepts a zeroed or finished result */

#endif
