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

#include "core/signature.h"

/* Serialises adapter a (of model m) with its signature into a malloc'd safetensors image. */
int adapter_blob_build(const adapter *a, const model *m, const signature *sig, uint8_t **out, size_t *len,
                       clad_err *err);
/* Reads the signature from a blob; CLAD_ENOTFOUND if the blob carries none. Shapes are checked against m.
 * sig is caller memory (release with signature_finish). */
int signature_from_blob(signature *sig, const model *m, const void *blob, size_t len, clad_err *err);

#endif
