/* Hugging Face PEFT LoRA adapters: clad adapter versions to and from PEFT's on-disk directory.
 *
 * A PEFT directory holds adapter_model.safetensors and adapter_config.json. Tensors are
 * "base_model.model.<module>.lora_A.weight" (r, in) and "...lora_B.weight" (out, r), with <module> the
 * PyTorch path in timm's layout (io/vit_import.h: "blocks.0.attn.qkv"; patch_embed.proj is a Conv2d, so
 * its factors are kernels (r, C, P, P) and (out, r, 1, 1)); the task head is a modules_to_save module
 * written as PEFT writes it, "base_model.model.head.weight" / ".bias". The config names every adapted
 * module in target_modules (layers with rank 0 are left out), r is the most common rank and rank_pattern
 * lists the others; lora_alpha is clad's alpha, so PEFT's per-module scaling lora_alpha / r equals clad's
 * alpha / rank and alpha_pattern stays empty.
 *
 * Export takes lora adapters as they are, tied adapters as their exact LoRA equivalent (adapter_tied_to_lora)
 * and refuses fusion adapters, which have no plain LoRA form. Import accepts LoRA configs with
 * rank_pattern, alpha_pattern (keys matched as PEFT does: the first key k with (.*\.)?(k)$ matching the
 * module) and use_rslora; per-module scalings that differ from lora_alpha / r are folded into B, so the
 * imported adapter computes the same change. Module names may also be Hugging Face's ViT names
 * (io/vit_import.h), head "classifier": the LoRAs of query, key and value become one qkv LoRA whose rank is
 * their sum (A stacked, B block-diagonal), which is exact. DoRA, fan_in_fan_out, bias other than "none", and modules
 * clad's model lacks are refused naming what.
 */
#ifndef CLAD_IO_PEFT_H
#define CLAD_IO_PEFT_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

#define PEFT_MODEL_FILE "adapter_model.safetensors"
#define PEFT_CONFIG_FILE "adapter_config.json"
#define PEFT_PREFIX "base_model.model."

typedef struct peft_files {
    uint8_t *model;     /* adapter_model.safetensors (malloc'd) */
    size_t model_len;
    char *config;       /* adapter_config.json text (malloc'd) */
} peft_files;

/* Exports adapter a of model m; base_name goes into base_model_name_or_path. CLAD_EINVAL with the reason
 * for a kind that has no LoRA equivalent. */
int peft_export(const adapter *a, const model *m, const char *base_name, peft_files *out, clad_err *err);
void peft_files_finish(peft_files *f);  /* accepts a zeroed struct */

/* A lora adapter for m from a PEFT directory's two files. Without a head in the file the adapter keeps
 * the base head. NULL on error (CLAD_EINVAL naming the tensor, key or module). */
adapter *peft_import(const model *m, const void *st_buf, size_t st_len, const char *config, size_t config_len,
                     clad_err *err);

#endif
