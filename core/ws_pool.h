/* A pool of reusable prediction workspaces, shared by the threads of a server.
 *
 * Creating a workspace allocates and zeroes every activation buffer of a batch (megabytes for a ViT); a
 * server that did so per request spent a large part of a small prediction on it. The pool hands out an
 * idle workspace that fits the model and adapter (core/model.h: model_ws_fits) and takes it back after the
 * request, keeping at most `max_idle` idle ones. Thread-safe.
 */
#ifndef CLAD_CORE_WS_POOL_H
#define CLAD_CORE_WS_POOL_H

#include <stddef.h>

#include "core/model.h"

typedef struct ws_pool ws_pool;

/* Workspaces of max_batch samples, without gradient buffers. NULL on allocation failure. */
ws_pool *ws_pool_create(int max_batch, int max_idle);
/* Destroys every idle workspace; all taken ones must have been returned. Accepts NULL. */
void ws_pool_destroy(ws_pool *p);

/* An idle workspace for (m, a), or a new one. NULL with err set (CLAD_ENOMEM, or the workspace's own
 * error) on failure. */
model_ws *ws_pool_take(ws_pool *p, const model *m, const adapter *a, clad_err *err);
/* Gives ws back (NULL is ignored). */
void ws_pool_give(ws_pool *p, model_ws *ws);
/* Destroys the idle workspaces made for m: call before destroying m. */
void ws_pool_forget_model(ws_pool *p, const model *m);
/* Idle workspaces now (for status reports and tests). */
size_t ws_pool_idle(ws_pool *p);

#endif
