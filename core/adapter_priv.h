/* Private to core/: the pieces the adapter kinds share (model.c builds lora adapters, tied.c tied ones,
 * fusion.c fusion ones; model_run.c runs them all). Not part of the public API. */
#ifndef CLAD_CORE_ADAPTER_PRIV_H
#define CLAD_CORE_ADAPTER_PRIV_H

#include "core/model.h"
#include "core/rng.h"

/* An empty adapter of the given kind: class count and alpha checked, every tensor index -1. */
adapter *adapter_alloc(const model *m, adapter_kind kind, float alpha, int n_classes, clad_err *err);
/* Checks rank r for linear li (0..min(in,out), 0 on the head), naming the layer. */
int adapter_check_rank(const model *m, int li, int r, clad_err *err);
/* Declares the head tensors and allocates the parameters. */
int adapter_finish_layout(adapter *a, const model *m, clad_err *err);
/* The head: a copy of the base head when the class counts match, else a fresh linear. */
void adapter_init_head(adapter *a, const model *m, rng *r);
/* U(-bound, bound) for n floats. */
void model_fill_uniform(float *w, size_t n, float bound, rng *r);

/* ---- tied (tied.c) ---- */
/* The first linear of li's shape group (whose turn it is to initialise the shared pair). */
int tied_group_leader(const adapter *a, int li);
/* u = v = 1 for every member (tl6; tl5 has no u, v tensors). */
void tied_init_scales(adapter *a);
/* Beff (out,r) = diag(v) B diag(u), the per-layer B that turns a tied layer into a plain LoRA one. */
void tied_effective_B(float *Beff, const float *B, const float *u, const float *v, int out, int r);
/* Chain rule through tied_effective_B: given dBeff (out,r),
 * dB (out,r) += dBeff * v u^T;  du (r) += sum_o dBeff[o,k] v[o] B[o,k];  dv (out) += sum_k dBeff[o,k] B[o,k] u[k].
 * Any of dB, du, dv may be NULL. */
void tied_backward_scales(float *dB, float *du, float *dv, const float *dBeff, const float *B, const float *u,
                          const float *v, int out, int r);

/* ---- fusion (fusion.c) ---- */
/* Q, K ~ N(0, 0.02), biases 0, V = I with 1e-6 off the diagonal. */
void fusion_init_params(adapter *a, rng *r);

#endif
