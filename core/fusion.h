/* AdapterFusion for clad's LoRA adapters (Pfeiffer et al., "AdapterFusion"; see docs/METHODS.md).
 *
 * A fusion adapter composes N frozen source adapters for a new task. At every fusion site (vit: the output
 * of each block; mlp: the output of each hidden layer, after GELU) the site is run N + 1 times on the same
 * input: once with the base weights, giving h0, and once with each source's LoRA, giving z_n. Per row
 * (token or sample):
 *     q = h0 Q^T + bq,  k_n = z_n K^T + bk,  v_n = z_n V^T,
 *     s = softmax_n(q . k_n),  out = sum_n s_n v_n,
 * and `out` is what the next layer sees. Q, K, V are (C,C); Q and K start N(0, 0.02) (so s starts
 * uniform), V starts at the identity with 1e-6 off the diagonal, and the loss gains
 * FUSION_V_PENALTY * sum_sites ||I - V||_F^2, which keeps V near the identity: with V = I the output is a
 * convex combination of the sources' outputs. Only Q, K, V and the head train; the base and the sources
 * stay bit-identical. The average of s per source is what a user reads as "which earlier tasks the new
 * one leans on" (fusion_mean_weights).
 *
 * Cost: a fusion forward runs every block N + 1 times (vit); for an mlp the base product is shared and each
 * source adds one LoRA product and one GELU.
 */
#ifndef CLAD_CORE_FUSION_H
#define CLAD_CORE_FUSION_H

#include "core/dataset.h"
#include "core/model.h"

#define FUSION_V_PENALTY 0.01f

/* Creates a fusion adapter over n sources (1..FUSION_MAX_SOURCES) with its own head of n_classes.
 * names[i] (may be NULL: "source<i>") names source i in files and reports. LoRA sources are borrowed and
 * must outlive the fusion adapter; tied sources are converted to LoRA copies that it owns. Sources must
 * be made for m and must not adapt patch_embed (it lies before the first fusion site) or be fusion
 * adapters themselves. Parameters are zero until adapter_init. NULL on error (CLAD_EINVAL naming the
 * source). */
adapter *adapter_fusion_create(const model *m, const adapter *const *sources, const char *const *names, int n,
                               int n_classes, clad_err *err);

/* Width C of fusion site `site` (vit: dim; mlp: hidden[site]). */
int fusion_site_dim(const model *m, int site);

/* ---- kernels on plain arrays (rows R, width C, sources S) ---- */
/* out (R,C), s (R,S), q (R,C), k (S,R,C), v (S,R,C) are written; h0 (R,C), z[n] (R,C) each;
 * Qw, Kw, Vw (C,C), Qb, Kb (C). */
void fusion_forward(float *out, float *s, float *q, float *k, float *v, const float *h0, const float *const *z,
                    const float *Qw, const float *Qb, const float *Kw, const float *Kb, const float *Vw, int R,
                    int C, int S);
/* Accumulates dh0 (R,C), dz[n] (R,C) and the parameter gradients (any of dQw..dVw may be NULL) from
 * dout (R,C), using the forward's s, q, k, v. scratch holds 3*R*C + R*S floats. */
void fusion_backward(float *dh0, float *const *dz, float *dQw, float *dQb, float *dKw, float *dKb, float *dVw,
                     float *scratch, const float *dout, const float *h0, const float *const *z, const float *s,
                     const float *q, const float *k, const float *v, const float *Qw, const float *Kw,
                     const float *Vw, int R, int C, int S);
/* FUSION_V_PENALTY * sum over sites of ||I - V||_F^2, and its gradient added into adapter_grad. */
float fusion_penalty(const adapter *a);
void fusion_penalty_backward(float *adapter_grad, const adapter *a);

/* Average fusion weight of each source over the samples of d (every row of every site counts once):
 * mean (n_sources); per_site (n_sites, n_sources) may be NULL. */
int fusion_mean_weights(const model *m, const adapter *a, const dataset *d, int batch, double *mean,
                        double *per_site, clad_err *err);

#endif
