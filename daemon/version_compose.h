/* Versions stored by reference (core/cl_pipeline.h): a version that reuses an earlier version's change
 * stores only its new components and head, and names the earlier version as the one it needs
 * (store_version_in.needs, the store's version_deps). These read any lora or tied version through a store
 * handle and give what serves it and what later tasks compare against, composing a version stored by
 * reference with the version it references (which may itself be stored by reference; chains are followed
 * up to VERSION_COMPOSE_DEPTH). Plain versions load as they are. Callable from any thread that owns s.
 */
#ifndef CLAD_DAEMON_VERSION_COMPOSE_H
#define CLAD_DAEMON_VERSION_COMPOSE_H

#include "core/model.h"
#include "core/signature.h"
#include "storage/store.h"

#define VERSION_COMPOSE_DEPTH 64

/* The adapter that serves version v (loaded WITH its blob) of model m; the caller owns it. NULL with err
 * set: the blob's errors, CLAD_ECORRUPT when v names no single version it needs (or the chain is too
 * deep) or the referenced version does not fit, CLAD_ENOTFOUND (version_deleted_while_loading) when v was
 * deleted after it was read, taking the version it needed with it. */
adapter *version_adapter(store *s, const model *m, const store_version *v, clad_err *err);

/* The signature of version v: the stored one, or for a version stored by reference its composed
 * adapter's change (recomputed, deterministic) with the stored pull. sig is caller memory. */
int version_signature(store *s, const model *m, const store_version *v, signature *sig, clad_err *err);

/* Sets err for a version that was read and then deleted before its load finished: CLAD_ENOTFOUND (a
 * request for it answers 404, as for any deleted version) with a message saying so. Returns the code. */
int version_deleted_while_loading(clad_err *err, const char *task, int64_t version);

#endif
