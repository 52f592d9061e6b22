/* Parameter tables in one allocation; see params.h. */
#include "core/params.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void param_set_init(param_set *p)
{
    memset(p, 0, sizeof *p);
}

void param_set_finish(param_set *p)
{
    if (!p) return;
    free(p->t);
    free(p->data);
    memset(p, 0, sizeof *p);
}

int param_set_add(param_set *p, const char *name, int ndim, const int *shape, bool decay)
{
    assert(!p->data && ndim >= 0 && ndim <= PARAM_MAX_DIMS && strlen(name) < PARAM_NAME_MAX);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->t = realloc(p->t, (size_t)p->cap * sizeof *p->t);
        if (!p->t) abort(); /* small bookkeeping allocation */
    }
    param_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        assert(shape[i] >= 0);
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = p->total;
    t->decay = decay;
    p->total += t->numel;
    return p->n++;
}

int param_set_alloc(param_set *p, clad_err *err)
{
    assert(!p->data);
    p->data = calloc(p->total + 1, sizeof *p->data);
    if (!p->data) return clad_err_set(err, CLAD_ENOMEM, "cannot allocate %zu parameters", p->total);
    return 0;
}

int param_set_find(const param_set *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->t[i].name, name)) return i;
    return -1;
}

bool param_set_same_layout(const param_set *a, const param_set *b)
{
    if (a->n != b->n || a->total != b->total) return false;
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->t[i].name, b->t[i].name) || a->t[i].ndim != b->t[i].ndim) return false;
        for (int d = 0; d < a->t[i].ndim; d++)
            if (a->t[i].shape[d] != b->t[i].shape[d]) return false;
    }
    return true;
}
