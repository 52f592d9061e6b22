/* Dataset readers and writers: IDX (raw or gzip'd, as Fashion-MNIST ships), safetensors, CSV.
 *
 * All readers produce a core `dataset` (see core/dataset.h): U8 pixels are scaled to [0,1]; images keep
 * their (C,H,W) shape (IDX 3-D images get C = 1); labels are ints. Every reader validates what it reads
 * (sizes, magic numbers, label range, NaN/Inf) and names the problem on error; nothing it is given can
 * crash it. Request-sized allocations are bounded by DATASET_* limits and DATASET_IO_MAX_BYTES.
 */
#ifndef CLAD_IO_DATASET_IO_H
#define CLAD_IO_DATASET_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "core/dataset.h"

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* IDX: images (magic 0x00000803, U8, n x rows x cols) and labels (0x00000801, U8, n). Either buffer may be
 * gzip-compressed (detected by its magic bytes). labels may be NULL (predict-only data; labels set to 0). */
int dataset_parse_idx(dataset *out, const void *images, size_t images_len, const void *labels,
                      size_t labels_len, clad_err *err);
int dataset_load_idx(dataset *out, const char *images_path, const char *labels_path, clad_err *err);
/* Fashion-MNIST from dir (NULL = FMNIST_DEFAULT_DIR), train or test split, 10 classes. */
int dataset_load_fmnist(dataset *out, const char *dir, bool train, clad_err *err);

/* safetensors dataset: tensor `x` of shape [N, ...] (U8 -> /255, or F32/F16/BF16/F64) and tensor `y` of
 * shape [N] with integer labels. `y` may be absent when labels_optional (predict). */
int dataset_parse_safetensors(dataset *out, const void *buf, size_t len, bool labels_optional,
                              clad_err *err);
/* Writes x as F32 with shape [N, shape...] and y as I64. */
int dataset_save_safetensors(const dataset *d, const char *path, clad_err *err);
/* The same with the samples' tasks, for evaluating without a task id (POST /v1/evaluate): an integer
 * tensor "task" (n) of indices into tasks_json, a JSON list of task names kept in the metadata "tasks". */
int dataset_save_safetensors_tasks(const dataset *d, const int *task, const char *tasks_json, const char *path,
                                   clad_err *err);

/* CSV: one sample per line, label first then features; optional header line (detected when its first
 * field is not a number); commas; blank lines ignored. Features are taken as-is (not scaled). With
 * labels_optional, a line may hold only features if every line does (predict). */
int dataset_parse_csv(dataset *out, const char *buf, size_t len, bool labels_optional, clad_err *err);

/* Detects the format from content: safetensors (8-byte length then '{'), gzip'd or raw IDX images
 * (labels then unavailable unless labels_optional), otherwise CSV. */
int dataset_parse_any(dataset *out, const void *buf, size_t len, bool labels_optional, clad_err *err);

/* Reads a whole file into a malloc'd buffer (NUL-terminated for convenience), refusing files over max_bytes. */
int file_read_all(const char *path, size_t max_bytes, uint8_t **out, size_t *len, clad_err *err);
/* gunzips a buffer into a malloc'd one, refusing output over max_out bytes. */
int gunzip_buffer(const void *in, size_t in_len, size_t max_out, uint8_t **out, size_t *out_len, clad_err *err);

/* ---- additions by the io module (the declarations above are unchanged) ---- */

/* Upper bound on the decompressed bytes of any one dataset input (raw or gunzip'd). Together with the
 * DATASET_* limits in core/dataset.h it bounds every allocation a reader makes by its input. */
#define DATASET_IO_MAX_BYTES (1ULL << 30)

/* How dataset_parse_csv decides with labels_optional: the first column is a label only when a header row
 * names it "label", "labels", "y", "target" or "class" (any case); otherwise every column is a feature and
 * every label is 0. Without labels_optional the first column is always the label. */

/* gunzips at most `want` bytes of the start of a gzip stream into out (caller memory) and sets *got to the
 * number produced, less than want only when the stream is shorter. Lets a reader check a header before it
 * inflates the rest. CLAD_EINVAL if the input is not gzip or is corrupt within that prefix. */
int gunzip_prefix(const void *in, size_t in_len, void *out, size_t want, size_t *got, clad_err *err);

#endif
