/* Model and adapter files: configs as JSON, weights as safetensors with the config in __metadata__.
 *
 * A base model file holds every parameter under its stable name ("blocks.0.qkv.weight") plus metadata
 * {"format": "clad-base", "config": <config JSON>}. An adapter file holds "<layer>.lora_A.weight" (r,in),
 * "<layer>.lora_B.weight" (out,r), "head.weight", "head.bias" plus metadata {"format": "clad-adapter",
 * "kind": "lora", "alpha": "16", "classes": "10", "ranks": {"fc1": 8, ...} as JSON, "base_sha256": ...}.
 * A rank-pruned adapter adds "ranks_before" (same form). Kind "tied" adds "variant": "tl5"|"tl6" and holds
 * the tied tensors (model.h); kind "fusion" adds "sources": ["rot15", ...] (the source adapters' names, in
 * order) and holds only its own Q/K/V and head: the sources are separate files.
 * Readers check every name and shape against the model and refuse NaN/Inf weights.
 */
#ifndef CLAD_IO_MODEL_IO_H
#define CLAD_IO_MODEL_IO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

/* Size limit for model and adapter files. */
#define MODEL_FILE_MAX_BYTES (1ULL << 31)

/* Parses a model config: a preset name ("vit-tiny"), or an object {"model": "mlp", "input_dim": 784,
 * "hidden": [256, 256], "classes": 10} / {"model": "vit", "channels": 1, "height": 28, "width": 28,
 * "patch": 4, "dim": 64, "depth": 4, "heads": 4, "mlp_dim": 128, "classes": 10} (vit may add "ln_eps": 1e-6 and
 * "gelu": "erf"|"tanh"; defaults 1e-5 and tanh); {"model": "vit-tiny",
 * "classes": 5} starts from a preset and overrides fields. Unknown keys and presets are refused (CLAD_EINVAL). */
int model_config_from_json(model_config *cfg, const json_t *j, clad_err *err);
json_t *model_config_to_json(const model_config *cfg);
/* Same, from text; a bare preset name (mlp) is accepted too. */
int model_config_parse(model_config *cfg, const char *text, clad_err *err);

/* Base models. to_buffer returns a malloc'd safetensors image. */
int model_to_buffer(const model *m, uint8_t **out, size_t *len, clad_err *err);
int model_save(const model *m, const char *path, clad_err *err);
/* cfg may be NULL to take the config from the file's metadata. */
model *model_from_buffer(const void *buf, size_t len, const model_config *cfg, clad_err *err);
model *model_load(const char *path, const model_config *cfg, clad_err *err);

/* Adapters for a given model. */
int adapter_to_buffer(const adapter *a, const model *m, uint8_t **out, size_t *len, clad_err *err);
int adapter_save(const adapter *a, const model *m, const char *path, clad_err *err);
/* Adds the adapter's metadata and tensors to a writer (for files that carry more, such as a signature). */
struct st_writer;
int adapter_to_writer(struct st_writer *w, const adapter *a, const model *m, clad_err *err);
/* Adds metadata `key`: {"layer": rank, ...} as compact sorted JSON, for the layers whose ranks[li] is not 0. */
int adapter_ranks_meta(struct st_writer *w, const char *key, const int *ranks, const model *m, clad_err *err);
/* Adapter readers ignore tensors under these prefixes: the adapter's signature (io/signature_io.h) and,
 * in merged versions, every source task's head (io/merge_io.h). */
#define ADAPTER_SIGNATURE_PREFIX "signature."
#define ADAPTER_HEADS_PREFIX "heads."
adapter *adapter_from_buffer(const model *m, const void *buf, size_t len, clad_err *err);
adapter *adapter_load(const model *m, const char *path, clad_err *err);
/* Adapters stored by reference (core/cl_pipeline.h) carry only their new part, with the metadata 'reused'
 * (JSON: layer -> components taken from the referenced version) and 'reuses' ("task@version", for
 * messages). adapter_from_buffer and adapter_load refuse such a part (CLAD_EINVAL naming the reference),
 * so nothing uses it as if it were whole; this reads it (or a whole adapter, reused all zero) with the
 * reused counts into reused[m->n_linear]. */
adapter *adapter_part_from_buffer(const model *m, const void *buf, size_t len, int *reused, clad_err *err);

/* Fusion adapters: the caller loads the sources first, in the order adapter_file_sources lists them
 * (names[FUSION_MAX_SOURCES], *n receives the count). adapter_load refuses a fusion file with a message
 * pointing here. Sources must outlive the returned adapter. */
int adapter_file_sources(const void *buf, size_t len, char names[][PARAM_NAME_MAX], int *n, clad_err *err);
adapter *adapter_fusion_from_buffer(const model *m, const void *buf, size_t len, const adapter *const *sources,
                                    int n_sources, clad_err *err);
adapter *adapter_fusion_load(const model *m, const char *path, const adapter *const *sources, int n_sources,
                             clad_err *err);

/* Ranks as a JSON object keyed by layer name (layers with rank 0 left out). */
json_t *adapter_ranks_to_json(const adapter *a, const model *m);
/* Parses {"fc1": 8, ...} into ranks[n_linear]; unknown layer names are refused. */
int adapter_ranks_from_json(int *ranks, const model *m, const json_t *j, clad_err *err);

#endif
