/* A pool of reusable prediction workspaces; see ws_pool.h. A short list under one mutex: a server holds a
 * handful of idle workspaces, and the lock is held only to pick or return one. */
#include "core/ws_pool.h"

#include <pthread.h>
#include <stdlib.h>

struct ws_pool {
    pthread_mutex_t mu;
    int max_batch, max_idle;
    int n_idle;
    model_ws **idle;    /* (max_idle) */
};

ws_pool *ws_pool_create(int max_batch, int max_idle)
{
    if (max_batch < 1 || max_idle < 0) return NULL;
    ws_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->idle = calloc((size_t)max_idle + 1, sizeof *p->idle);
    if (!p->idle) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->max_batch = max_batch;
    p->max_idle = max_idle;
    return p;
}

void ws_pool_destroy(ws_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->n_idle; i++) model_ws_destroy(p->idle[i]);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p);
}

model_ws *ws_pool_take(ws_pool *p, const model *m, const adapter *a, clad_err *err)
{
    pthread_mutex_lock(&p->mu);
    for (int i = p->n_idle - 1; i >= 0; i--) {
        model_ws *ws = p->idle[i];
        if (!model_ws_fits(ws, m, a)) continue;
        p->idle[i] = p->idle[--p->n_idle];
        pthread_mutex_unlock(&p->mu);
        return ws;
    }
    pthread_mutex_unlock(&p->mu);
    /* Made outside the lock: allocating and zeroing is the slow part. */
    return model_ws_create_for(m, a, p->max_batch, false, err);
}

void ws_pool_give(ws_pool *p, model_ws *ws)
{
    if (!ws) return;
    pthread_mutex_lock(&p->mu);
    if (p->n_idle < p->max_idle) {
        p->idle[p->n_idle++] = ws;
        ws = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    model_ws_destroy(ws);
}

void ws_pool_forget_model(ws_pool *p, const model *m)
{
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_idle;) {
        if (model_ws_model(p->idle[i]) == m) {
            model_ws_destroy(p->idle[i]);
            p->idle[i] = p->idle[--p->n_idle];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

size_t ws_pool_idle(ws_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = (size_t)p->n_idle;
    pthread_mutex_unlock(&p->mu);
    return n;
}
