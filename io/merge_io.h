/* Merged versions: one merged backbone change stored as a LoRA, plus the head of every source task.
 *
 * The blob is an adapter file (io/model_io.h) whose LoRA factors re-express the merged change (and whose
 * head is the first source's), plus "heads.<task>.weight" / "heads.<task>.bias" for every source task and
 * the metadata "merge_sources" (a JSON array of task names). Serving a source task through the merge uses
 * the shared factors with that task's own head.
 */
#ifndef CLAD_IO_MERGE_IO_H
#define CLAD_IO_MERGE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

#include "io/model_io.h"

#define MERGE_HEADS_PREFIX ADAPTER_HEADS_PREFIX

/* lora: the merged change as a LoRA for m; heads[i]: an adapter holding source i's head (names[i]). */
int merged_blob_build(const adapter *lora, const model *m, const char *const *names, const adapter *const *heads,
                      int n, uint8_t **out, size_t *len, clad_err *err);
/* The adapter that serves source `task` of a merged blob (the caller owns it). CLAD_ENOTFOUND names the
 * sources when task is not one of them; task NULL means the first source. */
adapter *merged_adapter_load(const model *m, const void *blob, size_t len, const char *task, clad_err *err);

#endif
