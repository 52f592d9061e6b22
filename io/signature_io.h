/* Adapter signatures inside adapter files: the stored form of what later tasks are compared against.
 *
 * A version's blob is an adapter file (io/model_io.h) plus, per adapted layer, the signature tensors
 * "signature.<layer>.U" (out,k), "signature.<layer>.Vt" (k,in) and "signature.<layer>.s" (k), and the
 * metadata "signature_energy" (JSON: layer -> ||dW||_F^2). Adapter readers skip these tensors, so a blob
 * loads as an adapter and as a signature.
 */
#ifndef CLAD_IO_SIGNATURE_IO_H
#define CLAD_IO_SIGNATURE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "core/route.h"
#include "core/signature.h"
#include "io/safetensors.h"

/* Serialises adapter a (of model m) with its signature into a malloc'd safetensors image. */
int adapter_blob_build(const adapter *a, const model *m, const signature *sig, uint8_t **out, size_t *len,
                       clad_err *err);
/* The same with the task's routing statistics (core/route.h) as the tensors "signature.routing.count" (K),
 * "signature.routing.component_class" (M, class numbers as floats), "signature.routing.component_count"
 * (M), "signature.routing.mean" (M,d) and "signature.routing.scatter" (d(d+1)/2, the upper triangle row by
 * row). rs may be NULL (no statistics). */
int adapter_blob_build_routed(const adapter *a, const model *m, const signature *sig, const route_stats *rs,
                              uint8_t **out, size_t *len, clad_err *err);
/* The blob of a version stored by reference (core/cl_pipeline.h): the new part of its adapter, the pull of
 * its signature only (the change part is recomputed from the composed adapter, see
 * daemon/version_compose.h), rs, and the metadata 'reused' and 'reuses' (io/model_io.h). */
int adapter_blob_build_part(const adapter *part, const model *m, const signature *sig, const route_stats *rs,
                            const int *reused, const char *reuses, uint8_t **out, size_t *len, clad_err *err);
/* Adds routing statistics to any safetensors writer (under the names above). */
int route_stats_to_writer(st_writer *w, const route_stats *rs, clad_err *err);
/* Reads routing statistics from a blob (or any safetensors image); CLAD_ENOTFOUND if it carries none. The
 * feature dimension must be route_feature_dim(m), values finite and components consistent with the classes. rs is initialised here. */
int route_stats_from_blob(route_stats *rs, const model *m, const void *blob, size_t len, clad_err *err);
/* Reads the signature from a blob; CLAD_ENOTFOUND if the blob carries none. Shapes are checked against m.
 * sig is caller memory (release with signature_finish). */
int signature_from_blob(signature *sig, const model *m, const void *blob, size_t len, clad_err *err);

#endif
