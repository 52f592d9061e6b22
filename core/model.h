/* Models (MLP and ViT), LoRA adapters and the forward/backward pass that ties them together.
 *
 * A `model` is a config plus frozen-or-trainable base parameters; it is read-only while serving, so many
 * threads may run it at once, each with its own `model_ws` (activations for a batch). An `adapter` is the
 * per-task part: a LoRA (rank per linear layer, 0 = none) and the task's own classification head. Running
 * a model with an adapter means y = x W^T + b + (alpha/r) (x A^T) B^T in every adapted linear, and the
 * adapter's head instead of the base head. The base is never modified by adapter training.
 *
 * Stable layer names: mlp linears are fc1, fc2, ... and head; vit linears are patch_embed, blocks.{i}.qkv,
 * blocks.{i}.proj, blocks.{i}.fc1, blocks.{i}.fc2 and head. Parameter names add ".weight"/".bias"; the
 * ViT also has cls_token, pos_embed, blocks.{i}.ln1/ln2.{weight,bias} and ln.{weight,bias}.
 *
 * Inputs: mlp takes (N, input_dim); vit takes images (N, C, H, W) flattened per sample.
 */
#ifndef CLAD_CORE_MODEL_H
#define CLAD_CORE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/params.h"

#define MODEL_MAX_HIDDEN 8
#define MODEL_MAX_LINEARS 64
#define MODEL_MAX_CLASSES 4096
#define MODEL_MAX_DEPTH ((MODEL_MAX_LINEARS - 2) / 4)  /* vit blocks: 4 linears each, plus embed and head */

typedef enum model_kind { MODEL_MLP = 1, MODEL_VIT = 2 } model_kind;

typedef struct model_config {
    model_kind kind;
    int n_classes;
    /* mlp */
    int input_dim;
    int n_hidden;
    int hidden[MODEL_MAX_HIDDEN];
    /* vit */
    int channels, height, width, patch, dim, depth, heads, mlp_dim;
    float ln_eps;       /* LayerNorm eps; 0 = clad's 1e-5 (timm ViTs use 1e-6, Hugging Face's 1e-12) */
    bool gelu_erf;      /* exact GELU (PyTorch's nn.GELU(), as timm and HF ViTs use); else the tanh form */
    /* Inputs may be any finite value: imported timm/HF ViTs take pixels normalised by the dataset's mean
     * and std. Else (clad's own image bases) pixels in [0, 1], which catches unscaled 0..255 inputs. */
    bool inputs_finite;
} model_config;

/* Reference configs: "mlp" (784-256-256-10, GELU) and "vit-tiny" (28x28x1, patch 4, dim 64, depth 4,
 * heads 4, mlp_dim 128, 10 classes). Returns CLAD_ENOTFOUND for other names. */
int model_config_preset(model_config *cfg, const char *name, clad_err *err);
/* Checks ranges and divisibility (patch divides H and W, heads divide dim), naming the bad field. */
int model_config_validate(const model_config *cfg, clad_err *err);
/* Floats per input sample. */
int model_config_input_dim(const model_config *cfg);

typedef struct model_linear {
    char name[PARAM_NAME_MAX];  /* "blocks.0.qkv" */
    int in, out;
    int weight, bias;           /* indices into model.params */
    bool is_head;
} model_linear;

/* The largest rank a change of an (out,in) linear can have, min(out, in): the cap on an adapter's rank
 * there. It takes the shape, not a model_linear, so other views of a linear (rank_input_layer) share it. */
static inline int model_linear_max_rank(int out, int in) { return out < in ? out : in; }

/* A LayerNorm's weight and bias: indices into model.params. */
typedef struct model_norm {
    int weight, bias;
} model_norm;

/* The ViT's tensors outside its linears, as indices into model.params, recorded once by model_create so
 * the passes need no name lookups (-1 in an mlp). */
typedef struct model_vit_params {
    int cls_token, pos_embed;                          /* (C) (T,C) */
    model_norm ln1[MODEL_MAX_DEPTH], ln2[MODEL_MAX_DEPTH];  /* per block, (C) each */
    model_norm ln;                                     /* the final LayerNorm, (C) each */
} model_vit_params;

typedef struct model {
    model_config cfg;
    param_set params;
    int n_linear;
    model_linear linear[MODEL_MAX_LINEARS];
    int seq_len;                /* vit: tokens incl. class token; mlp: 1 */
    model_vit_params vit;
} model;

/* Creates a model with zeroed parameters laid out for cfg. NULL on error. */
model *model_create(const model_config *cfg, clad_err *err);
void model_destroy(model *m);
/* Random initialisation: linears Kaiming-uniform-like (PyTorch nn.Linear default), biases 0,
 * LayerNorm 1/0, cls/pos N(0, 0.02). Deterministic in seed. */
void model_init_random(model *m, uint64_t seed);
int model_linear_find(const model *m, const char *name);  /* index or -1 */
/* The default LoRA targets: every qkv, proj, fc1, fc2 of vit; the hidden linears of mlp. */
bool model_linear_is_default_target(const model *m, int li);

/* ---- adapters ---- */
/* Kinds: lora (one B A pair per adapted linear), tied (one shared pair per shape group of linears with
 * per-layer scaling vectors; core/tied.c) and fusion (attention over the outputs of frozen source adapters;
 * core/fusion.h). Every kind has its own head. */
typedef enum adapter_kind { ADAPTER_LORA = 1, ADAPTER_TIED = 2, ADAPTER_FUSION = 3 } adapter_kind;

/* Tied-LoRA variants (named after the paper's configurations): tl5 trains the shared A and B with u = v = 1
 * fixed; tl6 trains A, B and every layer's u and v. */
typedef enum tied_variant { TIED_TL5 = 5, TIED_TL6 = 6 } tied_variant;

#define FUSION_MAX_SOURCES 16
#define FUSION_MAX_SITES 16   /* >= the largest vit depth and MODEL_MAX_HIDDEN */

typedef struct adapter adapter;
/* A kind's table of operations (private to core/: core/adapter_priv.h). */
typedef struct adapter_ops adapter_ops;

typedef struct adapter_tied {
    tied_variant variant;
    int n_groups;
    int group[MODEL_MAX_LINEARS];  /* shape group of each linear, -1 where rank 0 */
    int u[MODEL_MAX_LINEARS];      /* tensor index of u_l (r), -1 in tl5 (fixed at 1) or where rank 0 */
    int v[MODEL_MAX_LINEARS];      /* tensor index of v_l (out), likewise */
} adapter_tied;

typedef struct adapter_fusion {
    int n_sources;
    const adapter *source[FUSION_MAX_SOURCES];     /* frozen LoRA adapters, borrowed or in owned[] */
    adapter *owned[FUSION_MAX_SOURCES];            /* LoRA copies of tied sources (destroyed with us) */
    char source_name[FUSION_MAX_SOURCES][PARAM_NAME_MAX];
    int n_sites;                                   /* vit: depth (after each block); mlp: hidden layers */
    int q_w[FUSION_MAX_SITES], q_b[FUSION_MAX_SITES];  /* tensor indices: Q (C,C), bq (C) */
    int k_w[FUSION_MAX_SITES], k_b[FUSION_MAX_SITES];  /* K (C,C), bk (C) */
    int v_w[FUSION_MAX_SITES];                         /* V (C,C), no bias */
} adapter_fusion;

struct adapter {
    adapter_kind kind;
    const adapter_ops *ops;     /* the kind's operations, set by its constructor */
    int n_linear;               /* equals the model's */
    int rank[MODEL_MAX_LINEARS];/* 0 = no adapter on that linear; always 0 for the head */
    float alpha;                /* scale of linear li is alpha / rank[li] (lora); 1 (tied) */
    int n_classes;              /* the adapter's own head */
    param_set params;           /* "<linear>.lora_A.weight" (r,in), "<linear>.lora_B.weight" (out,r),
                                   "head.weight" (K,in_head), "head.bias" (K) */
    int A[MODEL_MAX_LINEARS], B[MODEL_MAX_LINEARS];  /* tensor indices, -1 where rank 0; tied: the shared
                                                        pair of the linear's group */
    int head_w, head_b;
    int rank_before[MODEL_MAX_LINEARS];  /* rank before rank pruning (core/prune.h); 0 = never pruned */
    adapter_tied tied;          /* kind tied only */
    adapter_fusion fusion;      /* kind fusion only */
};

/* ranks: one per model linear (NULL = none). Fails on a rank > min(in, out) or a rank on the head. */
adapter *adapter_create(const model *m, const int *ranks, float alpha, int n_classes, clad_err *err);
/* Tied-LoRA (core/tied.c): the linears with ranks[li] > 0 are grouped by shape (in, out); each group shares
 * "tied.<group>.lora_A.weight" (r,in) and "tied.<group>.lora_B.weight" (out,r), and in tl6 every member has
 * "<linear>.tied_u" (r) and "<linear>.tied_v" (out). A group is named after the last part of its members'
 * names when they agree ("qkv"), else after its shape ("64x128"). Members of a group must have equal ranks.
 * alpha is fixed at r (scale 1), as in the paper. */
adapter *adapter_tied_create(const model *m, const int *ranks, tied_variant variant, int n_classes,
                             clad_err *err);
void adapter_destroy(adapter *a);
/* lora: PEFT's initialisation, A Kaiming-uniform (a = sqrt(5)), B zero. tied: the same for the shared A and
 * B, u = v = 1. fusion: see core/fusion.h. The head is copied from the base head when the class counts
 * match, else initialised like a fresh linear. Deterministic in seed. */
void adapter_init(adapter *a, const model *m, uint64_t seed);
/* Trainable parameters of the adapter (LoRA factors, tied factors and scales, fusion Q/K/V, plus head). */
size_t adapter_param_count(const adapter *a);
/* The scale of linear li's LoRA product: alpha / rank (lora), 1 (tied); 0 where the rank is 0. */
float adapter_scale(const adapter *a, int li);
/* lora: alpha becomes `alpha` (> 0) and every layer's change scale B A stays the same (B takes the ratio of
 * the scales). Other kinds are left as they are. */
void adapter_lora_set_alpha(adapter *a, float alpha);
/* Kind name ("lora", "tied", "fusion"). */
const char *adapter_kind_name(adapter_kind k);
/* The dense change dW (out,in) that adapter a (lora or tied) makes to linear li: scale B A, or
 * diag(v) B diag(u) A for tied; zero where the rank is 0. */
void adapter_delta(float *dW, const adapter *a, const model *m, int li);
/* A LoRA adapter equal to a tied one (per layer A_l = A, B_l = diag(v) B diag(u), alpha = the largest
 * rank, the scale folded into B), with a copy of the head. For serving, merging and fusion. */
adapter *adapter_tied_to_lora(const adapter *t, const model *m, clad_err *err);
/* Copies the head of src into dst (same class count required). */
int adapter_copy_head(adapter *dst, const adapter *src, clad_err *err);

/* ---- workspace: activations (and their gradients when training) for up to max_batch samples ---- */
typedef struct model_ws model_ws;

/* max_rank bounds the adapters used with this workspace; with_grads adds the buffers for backward.
 * Such a workspace runs lora and tied adapters; fusion adapters need model_ws_create_for. */
model_ws *model_ws_create(const model *m, int max_batch, int max_rank, int max_classes, bool with_grads,
                          clad_err *err);
/* A workspace sized for adapter a (NULL = the base): its ranks and classes, and for a fusion adapter its
 * sources (their ranks, and activations for every source at every fusion site). */
model_ws *model_ws_create_for(const model *m, const adapter *a, int max_batch, bool with_grads, clad_err *err);
void model_ws_destroy(model_ws *ws);
/* True if ws was made for m and can run adapter a (ranks, classes); batches are split to max_batch. */
bool model_ws_fits(const model_ws *ws, const model *m, const adapter *a);
int model_ws_max_batch(const model_ws *ws);
const model *model_ws_model(const model_ws *ws);   /* the model the workspace was made for */

/* Forward pass on N <= max_batch samples x (N, input_dim). a may be NULL (base model). If targets is
 * non-NULL, returns the mean cross-entropy loss (plus, for a fusion adapter, its penalty on V; see
 * core/fusion.h); else returns 0. Logits and probabilities stay in ws. */
float model_forward(model_ws *ws, const model *m, const adapter *a, const float *x, const int *targets,
                    int N);
/* Probabilities (N, K) of the last forward. */
const float *model_ws_probs(const model_ws *ws);
const float *model_ws_logits(const model_ws *ws);
/* Features of every depth of the last forward, which must have run the base or a lora/tied adapter,
 * into out (N, model_depth_features_dim(m)): mlp, the output of every hidden layer in order (the inputs
 * without hidden layers); vit, each block's output averaged over its tokens, then the head's input. */
int model_depth_features_dim(const model *m);
void model_ws_depth_features(const model_ws *ws, float *out);  /* routing's features (core/route.h) */

/* Backward pass of the last forward (which must have had targets, and whose x must still be alive), accumulating into gradient buffers
 * laid out like m->params (base_grad, NULL = base frozen) and like a->params (adapter_grad, NULL = none).
 * The loss differentiated is the one model_forward returned. The sources of a fusion adapter stay frozen. */
void model_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad);
/* Fusion weights of the last forward at fusion site `site`: (rows, n_sources) softmax rows, one per token
 * (vit: N*T rows) or sample (mlp: N rows); *rows receives the row count. NULL unless the last forward ran a
 * fusion adapter. */
const float *model_ws_fusion_weights(const model_ws *ws, int site, int *rows);

#endif
