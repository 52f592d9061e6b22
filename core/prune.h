/* Shrinking trained adapters: rank pruning after training, and gradual magnitude pruning of B during
 * training on the cubic schedule (see docs/METHODS.md).
 *
 * Rank pruning: per layer, B A = (Q_B R_B)(Q_A R_A)^T = Q_B (R_B R_A^T) Q_A^T through thin QRs of B (out,r)
 * and A^T (in,r); the r x r SVD R_B R_A^T = U S V^T gives the SVD of B A without ever forming it, and the
 * layer keeps the smallest k whose top-k singular values hold a fraction tau of sum S^2. The new factors
 * split S evenly: B' = Q_B U_k S_k^(1/2), A' = S_k^(1/2) V_k^T Q_A^T, so B' A' is the best rank-k
 * approximation of B A; both are then multiplied by sqrt(k/r) because the adapter's scale changes from
 * alpha/r to alpha/k.
 *
 * Magnitude pruning (LSLo's use of Zhu & Gupta): at the start of epoch e the smallest fraction P_e of all
 * |B| entries of the adapter (one global threshold over its layers) is set to zero and kept there after
 * every step until the next epoch, with P_e = P (1 - (1 - (e - t1)/t2)^3) for t1 <= e <= t1 + t2, 0 before
 * and P after.
 */
#ifndef CLAD_CORE_PRUNE_H
#define CLAD_CORE_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

/* ---- rank pruning ---- */

/* One layer: B (out,r), A (r,in) with 1 <= r <= min(out,in). Finds the smallest k keeping a fraction tau
 * (0 < tau <= 1) of the energy of B A (k = 0 when B A = 0) and writes B2 (out,k) and A2 (k,in) with B2 A2 the
 * best rank-k approximation of B A, the singular values split evenly between them. S (r), may be NULL,
 * receives the singular values of B A. Errors: CLAD_EINVAL (sizes, tau), CLAD_ENOMEM, CLAD_EINTERNAL. */
int prune_factors(float *B2, float *A2, int *k, float *S, const float *B, const float *A, int out, int in, int r,
                  double tau, clad_err *err);

/* Singular values of every layer's B A, largest first: S (MODEL_MAX_LINEARS x PRUNE_MAX_RANK), row li holds
 * layer li's rank[li] values and zeros after them. Errors: CLAD_EINVAL (not a plain LoRA, a rank above
 * PRUNE_MAX_RANK), CLAD_ENOMEM. */
#define PRUNE_MAX_RANK 256
int prune_spectra(float *S, const adapter *a, const model *m, clad_err *err);

/* A new LoRA adapter equal to a (lora) with layer li cut to ranks[li] <= a->rank[li] (the best
 * approximation of that rank of each B A), the same alpha, a copy of the head, rank_before[] as prune_rank
 * sets it. NULL on error. */
adapter *prune_rank_to(const adapter *a, const model *m, const int *ranks, clad_err *err);

/* A new LoRA adapter equal to a (lora) with each layer cut to the rank keeping tau of its energy, the same
 * alpha, a copy of the head, and rank_before[] set to a's ranks (or kept from a if it was pruned before).
 * NULL on error (tied and fusion adapters are refused: convert a tied one with adapter_tied_to_lora). */
adapter *prune_rank(const adapter *a, const model *m, double tau, clad_err *err);

/* ---- magnitude pruning on the cubic schedule ---- */

/* P_e for epoch e (1-based). */
double prune_cubic_fraction(double P, int t1, int t2, int e);

/* The magnitude t such that exactly k entries of x (n) are kept by |x| >= t after ties are broken by
 * position; k = 0 gives +inf, k >= n gives 0. scratch holds n floats. */
float prune_magnitude_threshold(const float *x, size_t n, size_t k, float *scratch);

typedef struct prune_sched {
    double P;                 /* final fraction of B entries pruned, in [0, 1) */
    int t1, t2;               /* first pruning epoch and the ramp length in epochs (t2 >= 1) */
    size_t n;                 /* B entries of the adapter (each shared tied B once) */
    uint8_t *mask;            /* (n) 1 = pruned */
    float *scratch;           /* (n) */
    double fraction;          /* the fraction applied at the latest epoch */
    size_t pruned;            /* entries masked now */
} prune_sched;

/* For adapter a (lora or tied). Errors: CLAD_EINVAL naming the bad value, CLAD_ENOMEM. */
int prune_sched_init(prune_sched *s, const adapter *a, double P, int t1, int t2, clad_err *err);
void prune_sched_finish(prune_sched *s);
/* train_config hooks with ctx = the prune_sched: the epoch hook recomputes the mask and zeroes the masked
 * entries; the step hook zeroes them again after each update. */
int prune_sched_epoch_hook(void *ctx, adapter *a, int epoch, int epochs, clad_err *err);
void prune_sched_step_hook(void *ctx, adapter *a);

#endif
