/* ViT checkpoints in the layouts PyTorch users have on disk: timm's VisionTransformer and Hugging Face
 * transformers' ViTForImageClassification (docs/INTEROP.md has the name tables).
 *
 * Import reads a safetensors checkpoint in either layout (F32, F16 or BF16) into a clad model: the config
 * comes from the tensor shapes (dim, channels, patch, image size from the position embedding, depth,
 * mlp_dim, classes) plus what shapes cannot tell (heads, LayerNorm eps, GELU form), which the caller
 * gives or which take the layout's defaults: heads = dim / 64 (ViT-Ti/S/B), eps 1e-6 (timm) or 1e-12
 * (HF), exact-erf GELU. Hugging Face's separate query/key/value become clad's fused qkv (rows q, k, v).
 * Every tensor of the file must be used (HF's unused "vit.pooler.*" is skipped); names and shapes that
 * disagree are refused naming the tensor.
 *
 * Export writes a base in timm's layout (Conv2d-shaped patch_embed.proj.weight, [1,1,D] cls_token,
 * [1,T,D] pos_embed), with the clad config in the metadata "config" so a re-import is exact. MLP bases
 * keep their names (fc1, ..., head: already nn.Linear's).
 */
#ifndef CLAD_IO_VIT_IMPORT_H
#define CLAD_IO_VIT_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

typedef enum vit_layout { VIT_LAYOUT_AUTO = 0, VIT_LAYOUT_TIMM = 1, VIT_LAYOUT_HF = 2 } vit_layout;

typedef struct vit_import_opts {
    vit_layout layout;  /* AUTO: HF when "vit.embeddings.cls_token" is present, else timm */
    int heads;          /* 0: the file's clad config if it has one, else dim / 64 */
    float ln_eps;       /* 0: the file's clad config, else 1e-6 (timm) or 1e-12 (HF) */
    bool gelu_tanh;     /* the checkpoint was trained with the tanh GELU (default: exact erf) */
} vit_import_opts;

/* "timm", "hf", "auto" and back; CLAD_EINVAL names the choices. */
const char *vit_layout_name(vit_layout l);
int vit_layout_parse(vit_layout *l, const char *name, clad_err *err);

/* A model from a checkpoint image (len bytes); NULL on error (CLAD_EINVAL naming the tensor or field). */
model *vit_import(const void *buf, size_t len, const vit_import_opts *opts, clad_err *err);

/* m in timm's layout as a malloc'd safetensors image. */
int vit_export_timm(const model *m, uint8_t **out, size_t *len, clad_err *err);

/* The PyTorch module path of linear li in timm's layout ("blocks.0.attn.qkv", "patch_embed.proj",
 * "head"; an MLP's own names). */
void vit_timm_module_name(const model *m, int li, char *out, size_t size);
/* The linear whose timm module path is `module`; -1 if none. */
int vit_linear_from_timm(const model *m, const char *module);
/* The same for a module path in timm's or Hugging Face's layout, with the share of the linear's output
 * rows it holds: HF's query, key and value are parts 0, 1, 2 of *n_parts = 3 of clad's qkv; any other
 * module is part 0 of 1. -1 if no linear matches. */
int vit_linear_from_module(const model *m, const char *module, int *part, int *n_parts);

#endif
