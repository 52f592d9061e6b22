/* Private to core/: the table of operations every adapter kind provides, and the pieces the kinds share.
 *
 * Each kind (lora in adapter_lora.c, tied in tied.c, fusion in fusion.c; a merged version is stored as a
 * lora adapter) defines one `adapter_ops` table in its own file and hands it to adapter_alloc; the shared
 * code (model.c, the run passes, fold, merge, prune) calls through `a->ops` and never tests a->kind. Adding
 * a kind means one new file and one table. Not part of the public API. */
#ifndef CLAD_CORE_ADAPTER_PRIV_H
#define CLAD_CORE_ADAPTER_PRIV_H

#include "core/model.h"
#include "core/rng.h"

/* Buffers a workspace lends the adapter it runs (laid out in the workspace, sized for its max rank R). */
typedef struct adapter_bufs {
    float *B[MODEL_MAX_LINEARS];  /* per linear (out,R): a B formed before the forward (tied tl6: Beff) */
    float *dB;                    /* (max out,R): the LoRA kernel's dB of one linear before the kind maps it */
} adapter_bufs;

/* What a workspace must hold to run an adapter. */
typedef struct adapter_needs {
    int max_rank;   /* the largest rank of any LoRA product run (at least 1) */
    int n_sources;  /* fusion sources run beside the base (0 = none) */
} adapter_needs;

struct adapter_ops {
    adapter_kind kind;
    /* Fills the kind's own tensors (zeroed before; the caller initialises the head after, from the same r). */
    void (*init)(adapter *a, const model *m, rng *r);
    /* Frees what the adapter owns beyond its parameters; NULL = nothing. */
    void (*finish)(adapter *a);
    /* The scale of linear li's LoRA product (rank > 0). NULL where the kind runs no per-linear product. */
    float (*scale)(const adapter *a, int li);
    /* dW (out,in) += the dense change the adapter makes to linear li (rank > 0). NULL where the kind changes
     * no weight by itself (fusion): such adapters cannot be folded, merged, pruned or fused. */
    void (*delta)(float *dW, const adapter *a, const model *m, int li);
    /* A LoRA adapter equal to a (the caller owns it); NULL where a is already a plain LoRA adapter (only
     * meaningful where delta is set). */
    adapter *(*to_lora)(const adapter *a, const model *m, clad_err *err);
    /* The workspace a run of a needs. */
    void (*needs)(const adapter *a, adapter_needs *need);
    /* Before each forward: forms what lora_B returns from the current parameters; NULL = nothing to form. */
    void (*prepare)(const adapter *a, const model *m, adapter_bufs *bufs);
    /* The B (out,r) of linear li's LoRA product. */
    const float *(*lora_B)(const adapter *a, const adapter_bufs *bufs, int li);
    /* Where the LoRA kernel accumulates linear li's dB: the adapter's gradient (adapter_grad laid out like
     * a->params), or bufs->dB, zeroed, for map_dB to map. */
    float *(*lora_dB)(const adapter *a, adapter_bufs *bufs, float *adapter_grad, int li);
    /* Maps a dB that lora_dB put in bufs->dB to the kind's own gradients; NULL = lora_dB never does. */
    void (*map_dB)(const adapter *a, const adapter_bufs *bufs, float *adapter_grad, int li);
    /* A term the kind adds to the loss, and its gradient added into adapter_grad; NULL = none. */
    float (*penalty)(const adapter *a);
    void (*penalty_backward)(float *adapter_grad, const adapter *a);
    /* The run goes through fusion sites over the sources' outputs (model_fusion_site.c) instead of adding
     * per-linear products; the linears run with the base weights. */
    bool fuses_sources;
};

/* An empty adapter of the given kind: class count and alpha checked, every tensor index -1. */
adapter *adapter_alloc(const model *m, const adapter_ops *ops, float alpha, int n_classes, clad_err *err);
/* Checks rank r for linear li (0..min(in,out), 0 on the head), naming the layer. */
int adapter_check_rank(const model *m, int li, int r, clad_err *err);
/* Declares the head tensors and allocates the parameters. */
int adapter_finish_layout(adapter *a, const model *m, clad_err *err);
/* The head: a copy of the base head when the class counts match, else a fresh linear. */
void adapter_init_head(adapter *a, const model *m, rng *r);
/* U(-bound, bound) for n floats. */
void model_fill_uniform(float *w, size_t n, float bound, rng *r);
/* A's Kaiming-uniform initialisation for linear li (B stays zero: the adapter starts as no change). */
void adapter_init_A(adapter *a, const model *m, int li, rng *r);
/* dW (out,in) += scale diag(v) B diag(u) A for A (r,in), B (out,r); u (r) and v (out) may be NULL (= 1). */
void adapter_delta_add(float *dW, const float *A, const float *B, const float *u, const float *v, float scale,
                       int out, int in, int r);
/* needs for a kind whose only products are its own ranks (lora, tied). */
void adapter_needs_own_ranks(const adapter *a, adapter_needs *need);
/* The adapter has a per-linear LoRA form (lora, tied): it changes weights, so it can be folded or fused. */
static inline bool adapter_has_lora_form(const adapter *a) { return a->ops->delta != NULL; }
/* The adapter is a plain LoRA adapter (its A and B per linear are the product's own). */
static inline bool adapter_is_plain_lora(const adapter *a) { return a->ops->delta && !a->ops->to_lora; }

#endif
