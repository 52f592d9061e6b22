/* The compact signature of a learned task: per layer, orthonormal bases of the column space and the row
 * space of the weight change its adapter makes (with the singular values of that change), and the same for
 * the directions its probe found useful at the reference (its "pull", see core/probe.h and core/ranks.h).
 *
 * Both are kept because they answer different questions. The adapter's bases say what the task learned and
 * let a later task reuse it. The pull's bases say what the task asked of the reference: two probes of the
 * same task agree with each other far better than a probe agrees with a trained adapter (a probe's column
 * directions follow the gradient, which an adapter trained to convergence leaves behind), so a later task's
 * pull is compared with both (the task's "footprint").
 *
 * For a LoRA layer the change is dW = s B A (s = alpha / r, B (out,r), A (r,in)). With thin QRs B = Qb Rb and
 * A^T = Qa Ra, dW = Qb (s Rb Ra^T) Qa^T, so one r x r SVD of the core M = s Rb Ra^T = Uc S Vc^T gives
 * dW = (Qb Uc) S (Qa Vc)^T exactly, at O((out + in) r^2) cost. Directions are kept, largest first, until
 * they hold the fraction `keep` of ||dW||_F^2 (directions below 1e-6 of the largest are always dropped).
 *
 * A signature holds weight-space directions only: its size depends on the layer shapes and ranks, never on
 * the data the adapter was trained on (this is what makes clad rehearsal-free; see docs/RANKS.md).
 */
#ifndef CLAD_CORE_SIGNATURE_H
#define CLAD_CORE_SIGNATURE_H

#include <stddef.h>

#include "core/error.h"
#include "core/model.h"

typedef struct sig_layer {
    int out, in;      /* the layer's shape */
    int k;            /* directions kept (0: the adapter does not change this layer) */
    float *U;         /* (out,k) orthonormal columns: where the change writes */
    float *Vt;        /* (k,in) orthonormal rows: what the change reads */
    float *s;         /* (k) singular values of the change, descending */
    double energy;    /* ||dW||_F^2 of the whole change (before truncation) */
    int kp;           /* pull directions kept (0: none) */
    float *Up;        /* (out,kp) orthonormal columns of the task's useful pull */
    float *Vtp;       /* (kp,in) orthonormal rows */
} sig_layer;

typedef struct signature {
    int n_linear;                       /* equals the model's */
    sig_layer layer[MODEL_MAX_LINEARS]; /* k = 0 and NULL arrays where the adapter has rank 0 */
} signature;

/* Default fraction of each layer's change energy that a signature keeps. */
#define SIGNATURE_KEEP 0.999

/* Signature of one layer's change s B A (B (out,r), A (r,in), r >= 1, r <= min(out,in)). L owns its arrays
 * afterwards (release with signature_finish on the enclosing signature, or sig_layer_finish).
 * Errors: CLAD_EINVAL (shapes), CLAD_ENOMEM, CLAD_EINTERNAL (LAPACK). */
int sig_layer_from_factors(sig_layer *L, const float *B, const float *A, float scale, int out, int in, int r,
                           double keep, clad_err *err);
void sig_layer_finish(sig_layer *L);

/* Signature of every adapted layer of a (the head is not part of it: heads are per task). sig is caller
 * memory, initialised here; release with signature_finish. Errors as sig_layer_from_factors. */
int signature_compute(signature *sig, const model *m, const adapter *a, double keep, clad_err *err);
void signature_finish(signature *sig);   /* accepts a zeroed or finished signature */

/* Sets the pull directions of layer L: orthonormal bases of the column and row spaces of U (out,k) and
 * Vt (k,in) (not necessarily orthonormal themselves; k = 0 clears). Copies. Errors: CLAD_ENOMEM, LAPACK. */
int sig_layer_set_pull(sig_layer *L, const float *U, const float *Vt, int k, clad_err *err);

/* Floats held by the signature (what a store must keep). */
size_t signature_floats(const signature *sig);

/* The change the signature describes, dW = U diag(s) Vt, into dW (out,in) of layer li (zeros when k = 0). */
void signature_layer_delta(float *dW, const signature *sig, int li);

#endif
